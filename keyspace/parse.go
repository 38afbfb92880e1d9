package keyspace

import (
	"strconv"
	"strings"
	"time"
)

// Kind is what a key of the layout holds: the first component of its path
// after the prefix.
type Kind string

// The kinds of key, one per line of the layout (see the package comment).
const (
	KindMeta     Kind = "meta"
	KindNode     Kind = "nodes"
	KindClasses  Kind = "classes"
	KindAssign   Kind = "assign"
	KindElection Kind = "election"
	KindLeader   Kind = "leaders"
	KindLost     Kind = "lost"
	KindOwner    Kind = "owner"
	KindObject   Kind = "obj"
	KindData     Kind = "data"
	KindAlarm    Kind = "alarm"
	KindDue      Kind = "due"
	KindDead     Kind = "dead"
	KindRequests Kind = "req"
)

// Key is a key of the layout split into its components; the fields its kind
// has no component for are zero.
type Key struct {
	Kind Kind
	// Partition, for the kinds of a partition (assign, owner, obj, data,
	// alarm, due, dead, req).
	Partition int
	// Class and ID (hex, as in the key) of an object's keys.
	Class, ID string
	// Time is the due time of a due/ key, the scheduled time of a dead/ key.
	Time time.Time
	// Node of nodes/ and lost/ keys; DC of election/, leaders/ and lost/
	// keys; Lease of an election/ key (etcd's lease id in hex).
	Node, DC, Lease string
	// Data is the storage key of a data/ key.
	Data string
}

// Parse splits a key of the layout under s into its components. It accepts
// only what the builders write (partitions in exactly their zero-padded
// form, times in 16 digits, class and id non-empty, without '/'), so the
// builder of a parsed key's kind gives the key back.
func (s Space) Parse(key string) (Key, bool) {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return Key{}, false
	}
	kind, rest, _ := strings.Cut(rest, "/")
	k := Key{Kind: Kind(kind)}
	parts := strings.Split(rest, "/")
	switch k.Kind {
	case KindMeta:
		return k, rest == "cluster"
	case KindClasses:
		return k, key == s.Classes()
	case KindNode:
		k.Node = rest
		return k, rest != "" && len(parts) == 1
	case KindLeader:
		k.DC = rest
		return k, rest != "" && len(parts) == 1
	case KindElection:
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return Key{}, false
		}
		k.DC, k.Lease = parts[0], parts[1]
		return k, true
	case KindLost:
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return Key{}, false
		}
		k.Node, k.DC = parts[0], parts[1]
		return k, true
	case KindAssign, KindOwner:
		return k, len(parts) == 1 && k.partition(parts[0])
	case KindObject, KindAlarm, KindRequests:
		return k, len(parts) == 3 && k.partition(parts[0]) && k.object(parts[1], parts[2])
	case KindData:
		// The storage key may hold '/'.
		parts = strings.SplitN(rest, "/", 4)
		if len(parts) != 4 || !k.partition(parts[0]) || !k.object(parts[1], parts[2]) {
			return Key{}, false
		}
		k.Data = parts[3]
		return k, true
	case KindDue:
		return k, len(parts) == 4 && k.partition(parts[0]) && k.millis(parts[1]) && k.object(parts[2], parts[3])
	case KindDead:
		return k, len(parts) == 4 && k.partition(parts[0]) && k.object(parts[1], parts[2]) && k.millis(parts[3])
	}
	return Key{}, false
}

// partition sets k.Partition from s, written as part writes it.
func (k *Key) partition(s string) bool {
	if !allDigits(s) {
		return false
	}
	p, err := strconv.Atoi(s)
	if err != nil || part(p) != s {
		return false
	}
	k.Partition = p
	return true
}

// object sets k.Class and k.ID.
func (k *Key) object(class, id string) bool {
	k.Class, k.ID = class, id
	return class != "" && id != ""
}

// millis sets k.Time from 16 digits of Unix milliseconds.
func (k *Key) millis(s string) bool {
	if len(s) != millisDigits || !allDigits(s) {
		return false
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	k.Time = time.UnixMilli(ms)
	return err == nil
}
