package node

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/durable-run/durable"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// FuzzToStatus: any internal error, whatever its text (invalid UTF-8,
// huge), becomes a status that marshals with its ErrorDetail, whose code is
// Code's, and that FromStatus turns back into the same code, reason and
// sentinel.
func FuzzToStatus(f *testing.F) {
	f.Add("\x82", 0, "", int64(0))
	f.Add("key \"\xff\xfe\" too long", 2, "10.0.0.1:4600", int64(250))
	f.Add(strings.Repeat("é", 2000), len(errorTable), "\x82", int64(0))
	f.Add("plain", len(errorTable)+1, "", int64(-1))
	f.Add("", 9, "owner", int64(1<<62))
	f.Fuzz(func(t *testing.T, msg string, which int, owner string, retryAfterMS int64) {
		var err error
		var sentinel error
		wantReason := "INTERNAL"
		switch n := len(errorTable); {
		case which < 0:
			return
		case which%(n+2) < n:
			r := errorTable[which%(n+2)]
			sentinel, wantReason = r.target, r.reason
			err = fmt.Errorf("%s: %w", msg, r.target)
		case which%(n+2) == n:
			err, wantReason = &durable.ObjectError{Message: msg}, "OBJECT_ERROR"
		default:
			err = errors.New(msg)
		}
		if retryAfterMS > 0 {
			err = withRetryAfter(err, time.Duration(retryAfterMS%(1<<40))*time.Millisecond)
		}

		serr := ToStatus(err, owner)
		st, ok := status.FromError(serr)
		if !ok {
			t.Fatalf("ToStatus(%q) = %v, not a status", err, serr)
		}
		if st.Code() != Code(err) {
			t.Fatalf("ToStatus gave code %v, Code %v", st.Code(), Code(err))
		}
		// What crosses the wire: the status proto, marshalled and parsed.
		b, merr := proto.Marshal(st.Proto())
		if merr != nil {
			t.Fatalf("status of %.80q does not marshal: %v", err, merr)
		}
		var back = st.Proto()
		proto.Reset(back)
		if err := proto.Unmarshal(b, back); err != nil {
			t.Fatal(err)
		}
		wire := status.FromProto(back)
		detail := errorDetail(wire)
		if detail == nil {
			t.Fatalf("status of %.80q (owner %q) lost its ErrorDetail: %v", err, owner, wire.Details())
		}
		if detail.GetReason() != wantReason {
			t.Fatalf("reason %q, want %q", detail.GetReason(), wantReason)
		}
		if !utf8.ValidString(wire.Message()) || len(wire.Message()) > maxMessageBytes+len("…") {
			t.Fatalf("message %q: invalid UTF-8 or over the cap", wire.Message())
		}

		remote := FromStatus(wire.Err())
		if Code(remote) != st.Code() {
			t.Fatalf("FromStatus(ToStatus) has code %v, want %v", Code(remote), st.Code())
		}
		if sentinel != nil && !errors.Is(remote, sentinel) {
			t.Fatalf("FromStatus(ToStatus(%q)) is not %v", err, sentinel)
		}
		if again := errorDetail(status.Convert(ToStatus(remote, "elsewhere"))); again.GetReason() != wantReason {
			t.Fatalf("relayed status has reason %q, want %q", again.GetReason(), wantReason)
		}
	})
}

func errorDetail(st *status.Status) *durablev1.ErrorDetail {
	for _, d := range st.Details() {
		if ed, ok := d.(*durablev1.ErrorDetail); ok {
			return ed
		}
	}
	return nil
}

// FuzzResolveID: the validation of a request's class and object reference
// never panics, refuses with UnknownClass or InvalidArgument (as a status
// that marshals), and resolves names and ids to the ID they stand for.
func FuzzResolveID(f *testing.F) {
	id := durable.IDFromName("Batcher", "foo").String()
	f.Add("Batcher", "foo", "")
	f.Add("Batcher", "", id)
	f.Add("Batcher", "foo", id)
	f.Add("Counter", "", id)
	f.Add("", "foo", "")
	f.Add("bad/class", "foo", "")
	f.Add("C\x82", "foo", "")
	f.Add(strings.Repeat("é", 100), "x", "")
	f.Add("A"+strings.Repeat("a", 127), strings.Repeat("n", durable.MaxNameBytes+1), "")
	f.Add("Batcher", "", "")
	f.Fuzz(func(t *testing.T, class, name, idHex string) {
		got, err := ResolveID(class, Ref{Name: name, ID: idHex})
		if err != nil {
			if !errors.Is(err, durable.ErrUnknownClass) && !errors.Is(err, durable.ErrInvalidArgument) {
				t.Fatalf("ResolveID(%q, %q, %q) = %v", class, name, idHex, err)
			}
			if b, merr := proto.Marshal(status.Convert(ToStatus(err, "")).Proto()); merr != nil || len(b) == 0 {
				t.Fatalf("status of %v does not marshal: %v", err, merr)
			}
			return
		}
		if !classNameRE.MatchString(class) {
			t.Fatalf("class %q accepted", class)
		}
		switch {
		case name != "" && idHex != "":
			t.Fatal("both name and id accepted")
		case name != "" && got != durable.IDFromName(class, name):
			t.Fatalf("name %q resolved to %s", name, got)
		case idHex != "" && got.String() != idHex:
			t.Fatalf("id %q resolved to %s", idHex, got)
		}
		if err := checkRequestID(name); (err == nil) != (len(name) <= MaxRequestIDBytes) {
			t.Fatalf("checkRequestID of %d bytes: %v", len(name), err)
		}
	})
}

// FuzzListRange: List's options become a key range that holds exactly the
// keys the options select, or are refused with InvalidArgument.
func FuzzListRange(f *testing.F) {
	f.Add("", "", "", "", 0, "a")
	f.Add("b", "", "d", "", 10, "c")
	f.Add("b", "b", "", "", 0, "b")
	f.Add("", "a", "", "a", 0, "a\x00")
	f.Add("", "", "", "\xff\xff", 0, "\xff\xff\xff")
	f.Add("", "", "b", "ab", 0, "ab\xff")
	f.Add("", "", "", "a\xff", 0, "b")
	f.Add("", "", "", "", -1, "")
	f.Add(strings.Repeat("k", durable.MaxKeyBytes+1), "", "", "", 0, "k")
	f.Fuzz(func(t *testing.T, start, startAfter, end, prefix string, limit int, key string) {
		opts := durable.ListOptions{Start: start, StartAfter: startAfter, End: end, Prefix: prefix, Limit: limit}
		lo, hi, err := listRange(opts)
		if err != nil {
			if !errors.Is(err, durable.ErrInvalidArgument) {
				t.Fatalf("listRange(%+v) = %v", opts, err)
			}
			return
		}
		selected := (start == "" || key >= start) && (startAfter == "" || key > startAfter) &&
			(end == "" || key < end) && strings.HasPrefix(key, prefix)
		if got := inRange(key, lo, hi); got != selected {
			t.Fatalf("listRange(%+v) = [%q, %q): holds %q = %v, the options select it = %v", opts, lo, hi, key, got, selected)
		}
		// A storage key is valid exactly when it is non-empty and within
		// the limit.
		if err := checkKey(key); (err == nil) != (key != "" && len(key) <= durable.MaxKeyBytes) {
			t.Fatalf("checkKey(%d bytes) = %v", len(key), err)
		} else if err != nil && !errors.Is(err, durable.ErrInvalidArgument) {
			t.Fatalf("checkKey: %v", err)
		}
	})
}

// FuzzDecodeRing: any stored request ring decodes or is refused, never
// panics; what decodes encodes back to a record that decodes to the same
// entries (the binary form is canonical for what it holds).
func FuzzDecodeRing(f *testing.F) {
	f.Add(encodeRing(nil, []reqEntry{{ID: "0123abcd", Reply: []byte(`{"value":1}`), Digest: "0011223344556677"}}))
	f.Add(encodeRing(nil, []reqEntry{{ID: "call-x", Dropped: true}, {ID: "AB", Reply: []byte{0}}}))
	f.Add([]byte(`[{"id":"r1","reply":"b2s=","digest":"0011223344556677"}]`))
	f.Add([]byte("null"))
	f.Add([]byte{ringVersion, ringHexID, 0})
	f.Add([]byte{ringVersion, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		ring, err := decodeRing(b)
		if err != nil {
			return
		}
		again, err := decodeRing(encodeRing(nil, ring))
		if err != nil {
			t.Fatalf("a decoded ring does not decode once encoded: %v", err)
		}
		if len(again) != len(ring) {
			t.Fatalf("%d entries became %d", len(ring), len(again))
		}
		for i := range ring {
			a, b := ring[i], again[i]
			if a.ID != b.ID || a.Dropped != b.Dropped || string(a.Reply) != string(b.Reply) && !a.Dropped {
				t.Fatalf("entry %d: %+v became %+v", i, a, b)
			}
			if len(a.Digest) == 16 && isLowerHex(a.Digest) && a.Digest != b.Digest {
				t.Fatalf("entry %d: digest %q became %q", i, a.Digest, b.Digest)
			}
		}
	})
}
