package durable

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
)

// ID identifies one object of one class: 32 bytes, shown as 64 lowercase hex
// digits. The first 24 bytes are the identity (a hash of the name, or random);
// the last 8 are a checksum over the class name and the identity, so an ID
// made for one class is rejected by another and a mistyped ID never silently
// creates a new object.
type ID [32]byte

const (
	idBodyLen = 24
	idHexLen  = 64
)

// IDFromName returns the ID of the object of class named name: the same name
// gives the same ID everywhere. With WithLocation the data center is part of
// the derivation: "r1" homed in dc2 is another object than "r1" without a
// hint.
func IDFromName(class, name string, opts ...IDOption) ID {
	o := idOptionsOf(opts)
	h := sha256.New()
	h.Write([]byte("durable/name/v1\x00"))
	h.Write([]byte(class))
	h.Write([]byte{0})
	h.Write([]byte(name))
	if o.location != "" {
		h.Write([]byte("\x00location\x00"))
		h.Write([]byte(o.location))
	}
	var id ID
	copy(id[:idBodyLen], h.Sum(nil))
	id.seal(class, o.location)
	return id
}

// NewUniqueID returns a random ID of class; with WithLocation, one whose
// partition is homed in that data center.
func NewUniqueID(class string, opts ...IDOption) ID {
	var id ID
	if _, err := rand.Read(id[:idBodyLen]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics
		// inside Read instead of returning an error).
		panic(err)
	}
	id.seal(class, idOptionsOf(opts).location)
	return id
}

// IDFromString parses the hex form of an ID of class. A string that is not 64
// lowercase hex digits, or whose checksum does not match class, is an
// ErrInvalidArgument.
func IDFromString(class, s string) (ID, error) {
	var id ID
	if len(s) != idHexLen {
		return id, Invalidf("object id must be %d hex digits, got %d characters", idHexLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id, Invalidf("object id must be lowercase hex, found %q at position %d", c, i)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, Invalidf("object id: %v", err)
	}
	if !id.sealedFor(class) {
		return ID{}, Invalidf("object id %s does not belong to class %q", s, class)
	}
	return id, nil
}

// String returns the 64-digit lowercase hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Partition maps the ID to one of n partitions. The identity bytes are a hash
// or random, so partitions are evenly filled.
func (id ID) Partition(n int) int {
	return int(binary.BigEndian.Uint64(id[:8]) % uint64(n))
}

// seal writes the location tag, if any, and the checksum. A located ID's
// checksum is taken in its own domain, so the ID says it was made with a
// hint even for a data center the reader does not know.
func (id *ID) seal(class, location string) {
	domain := plainDomain
	if location != "" {
		tag := locationTag(location)
		copy(id[tagStart:tagEnd], tag[:])
		domain = locatedDomain
	}
	sum := checksum(domain, class, id[:idBodyLen])
	copy(id[idBodyLen:], sum[:])
}

// sealedFor reports whether the checksum matches class, in either domain.
func (id ID) sealedFor(class string) bool {
	return id.sealedIn(plainDomain, class) || id.sealedIn(locatedDomain, class)
}

func (id ID) sealedIn(domain, class string) bool {
	want := checksum(domain, class, id[:idBodyLen])
	return subtle.ConstantTimeCompare(want[:], id[idBodyLen:]) == 1
}

// Located reports whether id of class was made with a location hint
// (WithLocation). IDs made before hints existed, and all others, are not.
func (id ID) Located(class string) bool { return id.sealedIn(locatedDomain, class) }

const (
	plainDomain   = "durable/id/v1\x00"
	locatedDomain = "durable/id/located/v1\x00"
)

func checksum(domain, class string, body []byte) [8]byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte(class))
	h.Write([]byte{0})
	h.Write(body)
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}
