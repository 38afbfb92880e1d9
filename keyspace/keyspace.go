// Package keyspace is the single owner of the etcd key layout. Every other
// package builds keys through it, so the layout is written down in one place:
//
//	<prefix>meta/cluster                           cluster metadata (partition count), written once
//	<prefix>nodes/<node>                           node registration, on the node's lease
//	<prefix>classes                                the classes every node that owns partitions must serve, kept by the leaders
//	<prefix>assign/<p>                             desired placement of partition p (home DC, managing DC, node), written by DC leaders
//	<prefix>election/<dc>/<lease>                  leader election of data center dc (etcd concurrency.Election)
//	<prefix>leaders/<dc>                           what dc's leader publishes: its term number, election time, data centers up/down since
//	<prefix>lost/<node>/<dc>                       a lost node and where dc's leader moved its partitions, on a one-hour lease
//	<prefix>owner/<p>                              actual owner, on the owner's lease; CreateRevision = fencing token
//	<prefix>obj/<p>/<class>/<id>                   object metadata (its name)
//	<prefix>data/<p>/<class>/<id>/<key>            object storage
//	<prefix>alarm/<p>/<class>/<id>                 authoritative alarm record
//	<prefix>due/<p>/<due-ms>/<class>/<id>          time-ordered index of alarm/, written in the same Txn
//	<prefix>dead/<p>/<class>/<id>/<scheduled-ms>   abandoned alarms
//	<prefix>req/<p>/<class>/<id>                   the object's last request ids and replies (retry deduplication)
//
// Partitions are written as 5 decimal digits and times as 16 decimal digits of
// Unix milliseconds, both zero-padded, so that byte order is numeric order.
// Times are encoded exactly from the epoch to MaxTime; a time outside that
// range is clamped to its end (so byte order never contradicts time order),
// which is why SetAlarm refuses alarms after MaxTime.
// Class names may not contain '/', so the components parse back unambiguously:
// Parse splits any key of the layout into its kind and components (for
// `durable inspect`), accepting only what the builders write.
package keyspace

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Space builds keys under one prefix (default "/durable/").
type Space struct {
	prefix string
}

// New returns the key space under prefix, which must end with '/'.
func New(prefix string) Space { return Space{prefix: prefix} }

// Prefix returns the prefix every key starts with.
func (s Space) Prefix() string { return s.prefix }

func part(p int) string {
	if p < 0 {
		return fmt.Sprintf("%05d", p)
	}
	return padded(uint64(p), 5)
}

// padded writes v in decimal, zero-padded to width digits: what "%0*d"
// does, without fmt's cost on paths that build a key per alarm (part and
// FormatMillis were 3 % of a soak's CPU).
func padded(v uint64, width int) string {
	var b [20]byte
	i := len(b)
	for v > 0 || len(b)-i < width {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

const (
	// millisDigits is the width of a time in a key.
	millisDigits = 16
	// maxMillis is the largest Unix millisecond count millisDigits hold.
	maxMillis = 9_999_999_999_999_999
)

// MaxTime is the last instant a time key encodes exactly (about the year
// 318857). A later time would need a 17th digit and sort before earlier
// ones, so FormatMillis clamps it to MaxTime, and alarms after it are
// refused.
var MaxTime = time.UnixMilli(maxMillis).UTC()

// FormatMillis writes t as 16 zero-padded digits of Unix milliseconds. A
// time before the epoch is written as 0 and one after MaxTime as MaxTime, so
// the order of the strings never contradicts the order of the times.
func FormatMillis(t time.Time) string {
	ms := int64(0)
	switch {
	case t.After(MaxTime):
		// Compared as times: UnixMilli overflows long before time.Time does.
		ms = maxMillis
	case t.UnixMilli() > 0:
		ms = t.UnixMilli()
	}
	return padded(uint64(ms), millisDigits)
}

// Meta is the cluster metadata key.
func (s Space) Meta() string { return s.prefix + "meta/cluster" }

// NodesPrefix is the prefix of node registrations.
func (s Space) NodesPrefix() string { return s.prefix + "nodes/" }

// Node is the registration key of node id.
func (s Space) Node(id string) string { return s.NodesPrefix() + id }

// AssignPrefix is the prefix of desired partition assignments.
func (s Space) AssignPrefix() string { return s.prefix + "assign/" }

// Assign is the desired-owner key of partition p.
func (s Space) Assign(p int) string { return s.AssignPrefix() + part(p) }

// ElectionsPrefix is the prefix of every data center's election.
func (s Space) ElectionsPrefix() string { return s.prefix + "election/" }

// Election is the election prefix of data center dc.
func (s Space) Election(dc string) string { return s.ElectionsPrefix() + dc + "/" }

// Classes is the key of the cluster's required classes.
func (s Space) Classes() string { return s.prefix + "classes" }

// LeaderRecordsPrefix is the prefix of the leaders' published records.
func (s Space) LeaderRecordsPrefix() string { return s.prefix + "leaders/" }

// LeaderRecord is the record data center dc's leader publishes.
func (s Space) LeaderRecord(dc string) string { return s.LeaderRecordsPrefix() + dc }

// LostPrefix is the prefix of the lost-node records.
func (s Space) LostPrefix() string { return s.prefix + "lost/" }

// Lost is the record of node's loss written by data center dc's leader.
func (s Space) Lost(node, dc string) string { return s.LostPrefix() + node + "/" + dc }

// OwnerPrefix is the prefix of partition ownership keys.
func (s Space) OwnerPrefix() string { return s.prefix + "owner/" }

// Owner is the ownership key of partition p.
func (s Space) Owner(p int) string { return s.OwnerPrefix() + part(p) }

// ParsePartitionKey returns p from a key of the form <prefix><p>, p in
// decimal digits (no sign: a partition is never negative).
func ParsePartitionKey(key, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || !allDigits(rest) {
		return 0, false
	}
	p, err := strconv.Atoi(rest)
	return p, err == nil
}

// allDigits reports whether s is non-empty and all ASCII decimal digits.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Object is the metadata key of an object.
func (s Space) Object(p int, class, id string) string { return s.ObjectsPrefix(p, class) + id }

// ObjectsPrefix is the prefix of the metadata keys of partition p's objects
// of class.
func (s Space) ObjectsPrefix(p int, class string) string {
	return s.prefix + "obj/" + part(p) + "/" + class + "/"
}

// Requests is the key of an object's remembered request ids.
func (s Space) Requests(p int, class, id string) string {
	return s.prefix + "req/" + part(p) + "/" + class + "/" + id
}

// DataPrefix is the prefix of every storage key of an object.
func (s Space) DataPrefix(p int, class, id string) string {
	return s.prefix + "data/" + part(p) + "/" + class + "/" + id + "/"
}

// AlarmPrefix is the prefix of the alarm records of partition p.
func (s Space) AlarmPrefix(p int) string { return s.prefix + "alarm/" + part(p) + "/" }

// AlarmsPrefix is the prefix of every alarm record.
func (s Space) AlarmsPrefix() string { return s.prefix + "alarm/" }

// Alarm is the authoritative alarm record of an object.
func (s Space) Alarm(p int, class, id string) string { return s.AlarmPrefix(p) + class + "/" + id }

// DuesPrefix is the prefix of every partition's alarm index.
func (s Space) DuesPrefix() string { return s.prefix + "due/" }

// DuePrefix is the prefix of partition p's time-ordered alarm index.
func (s Space) DuePrefix(p int) string { return s.prefix + "due/" + part(p) + "/" }

// Due is the index entry of an object's alarm due at t.
func (s Space) Due(p int, t time.Time, class, id string) string {
	return s.DuePrefix(p) + FormatMillis(t) + "/" + class + "/" + id
}

// DueUntil is the first index key of partition p after every entry due at or
// before t: the exclusive end of a range read of the window up to t. From
// MaxTime on it is the end of the partition's index.
func (s Space) DueUntil(p int, t time.Time) string {
	if !t.Before(MaxTime) {
		return PrefixEnd(s.DuePrefix(p))
	}
	return s.DuePrefix(p) + FormatMillis(t.Add(time.Millisecond))
}

// ParseDue splits an index key of partition p into due time, class and id.
// It accepts only what Due writes (the time in exactly 16 digits), so a key
// it parses is Due of what it returns.
func (s Space) ParseDue(p int, key string) (due time.Time, class, id string, ok bool) {
	rest, found := strings.CutPrefix(key, s.DuePrefix(p))
	if !found {
		return time.Time{}, "", "", false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 || len(parts[0]) != millisDigits || !allDigits(parts[0]) {
		return time.Time{}, "", "", false
	}
	ms, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return time.Time{}, "", "", false
	}
	return time.UnixMilli(ms), parts[1], parts[2], true
}

// DeadPrefix is the prefix of partition p's dead letters.
func (s Space) DeadPrefix(p int) string { return s.prefix + "dead/" + part(p) + "/" }

// DeadAll is the prefix of every dead letter.
func (s Space) DeadAll() string { return s.prefix + "dead/" }

// Dead is the dead-letter key of an alarm scheduled at t.
func (s Space) Dead(p int, class, id string, scheduled time.Time) string {
	return s.DeadPrefix(p) + class + "/" + id + "/" + FormatMillis(scheduled)
}

// PrefixEnd returns the smallest key greater than every key with prefix.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00" // etcd: whole key space
}
