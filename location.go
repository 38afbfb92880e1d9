package durable

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
)

// IDOption changes how IDFromName and NewUniqueID make an ID.
type IDOption func(*idOptions)

type idOptions struct{ location string }

func idOptionsOf(opts []IDOption) idOptions {
	var o idOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLocation makes an ID whose partition is homed in data center dc, so
// the object lives there while dc is up (and in an adopting data center
// while it is down, as every partition of dc). It is Cloudflare's
// locationHint, made part of the ID: the hint cannot be lost or changed
// later, and every node and client computes the same partition from the ID
// alone. A cluster refuses an ID located in a data center it does not home
// partitions in (ErrInvalidArgument); an empty dc is no hint.
func WithLocation(dc string) IDOption { return func(o *idOptions) { o.location = dc } }

// A located ID keeps its hint as an 8-byte tag in the identity, after the 8
// bytes the partition is chosen by.
const (
	tagStart = 8
	tagEnd   = 16
)

func locationTag(dc string) [8]byte {
	sum := sha256.Sum256([]byte("durable/location/v1\x00" + dc))
	var tag [8]byte
	copy(tag[:], sum[:])
	return tag
}

// Layout maps IDs to a cluster's partitions: Partitions of them, partition p
// homed in Homes[p % len(Homes)] (the cluster's metadata, fixed when it is
// created). An ID without a location hint goes to ID.Partition; a located ID
// to one of the partitions homed in its data center, chosen by the same
// identity bytes, so located objects spread evenly over them.
type Layout struct {
	partitions int
	homes      []string
	located    []homeSet // one per distinct home data center
}

type homeSet struct {
	dc      string
	tag     [8]byte
	indexes []int // positions in homes: partitions p with p%len(homes) in indexes
	count   int   // partitions homed in dc
}

// NewLayout returns the layout of a cluster of partitions partitions homed
// in homes. Without homes every ID maps by ID.Partition.
func NewLayout(partitions int, homes []string) Layout {
	l := Layout{partitions: partitions, homes: append([]string(nil), homes...)}
	k := len(homes)
	for i, dc := range homes {
		c := 0
		if i < partitions {
			c = (partitions - i + k - 1) / k
		}
		j := -1
		for n := range l.located {
			if l.located[n].dc == dc {
				j = n
			}
		}
		if j < 0 {
			l.located = append(l.located, homeSet{dc: dc, tag: locationTag(dc)})
			j = len(l.located) - 1
		}
		l.located[j].indexes = append(l.located[j].indexes, i)
		l.located[j].count += c
	}
	return l
}

// Partitions returns the number of partitions.
func (l Layout) Partitions() int { return l.partitions }

// Homes returns the home data centers, in partition order.
func (l Layout) Homes() []string { return append([]string(nil), l.homes...) }

// Partition returns id's partition.
func (l Layout) Partition(id ID) int {
	if s := l.homeOf(id); s != nil {
		j := int(binary.BigEndian.Uint64(id[:8]) % uint64(s.count))
		k := len(l.homes)
		for _, i := range s.indexes {
			c := (l.partitions - i + k - 1) / k
			if i < l.partitions && j < c {
				return i + j*k
			}
			j -= c
		}
	}
	return id.Partition(l.partitions)
}

// Location returns the data center id is located in, or "" when it has no
// hint this layout knows.
func (l Layout) Location(id ID) string {
	if s := l.homeOf(id); s != nil {
		return s.dc
	}
	return ""
}

func (l Layout) homeOf(id ID) *homeSet {
	for n := range l.located {
		s := &l.located[n]
		if s.count > 0 && [8]byte(id[tagStart:tagEnd]) == s.tag {
			return s
		}
	}
	return nil
}

// CheckLocation refuses a hint for a data center no partition is homed in.
func (l Layout) CheckLocation(dc string) error {
	if dc == "" {
		return nil
	}
	for _, s := range l.located {
		if s.dc == dc && s.count > 0 {
			return nil
		}
	}
	return Invalidf("location %q is not a data center of this cluster (partitions are homed in %s)", dc, l.homeList())
}

// Check refuses an ID of class made with a location hint this cluster does
// not home partitions in: it would live wherever its hash falls, against the
// hint. IDs without a hint pass.
func (l Layout) Check(class string, id ID) error {
	if l.homeOf(id) != nil || !id.Located(class) {
		return nil
	}
	return Invalidf("object id %s was made with a location hint for a data center this cluster does not have (partitions are homed in %s)", id, l.homeList())
}

func (l Layout) homeList() string {
	dcs := make([]string, 0, len(l.located))
	for _, s := range l.located {
		if s.count > 0 {
			dcs = append(dcs, s.dc)
		}
	}
	return strings.Join(dcs, ", ")
}
