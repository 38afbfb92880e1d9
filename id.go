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
// gives the same ID everywhere.
func IDFromName(class, name string) ID {
	h := sha256.New()
	h.Write([]byte("durable/name/v1\x00"))
	h.Write([]byte(class))
	h.Write([]byte{0})
	h.Write([]byte(name))
	var id ID
	copy(id[:idBodyLen], h.Sum(nil))
	id.seal(class)
	return id
}

// NewUniqueID returns a random ID of class.
func NewUniqueID(class string) ID {
	var id ID
	if _, err := rand.Read(id[:idBodyLen]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics
		// inside Read instead of returning an error).
		panic(err)
	}
	id.seal(class)
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
	want := checksum(class, id[:idBodyLen])
	if subtle.ConstantTimeCompare(want[:], id[idBodyLen:]) != 1 {
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

func (id *ID) seal(class string) {
	sum := checksum(class, id[:idBodyLen])
	copy(id[idBodyLen:], sum[:])
}

func checksum(class string, body []byte) [8]byte {
	h := sha256.New()
	h.Write([]byte("durable/id/v1\x00"))
	h.Write([]byte(class))
	h.Write([]byte{0})
	h.Write(body)
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}
