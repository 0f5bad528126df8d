package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func seedState() State {
	return State{
		Priority:    200,
		Eligible:    true,
		Stable:      true,
		Frontends:   map[string]bool{"k8s_apiserver": true, "talos_apiserver": false},
		Holds:       []string{"192.168.66.160", "2001:db8::160"},
		Holder:      map[string]string{"192.168.66.160": "lb1", "2001:db8::160": "lb2"},
		Fingerprint: "3f2a9c1d",
		Version:     "v0.1.0",
	}
}

func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		s    State
	}{
		{name: "zero", s: State{}},
		{name: "seed", s: seedState()},
		{name: "maintenance only", s: State{Maintenance: true}},
		{name: "negative priority", s: State{Priority: -7, Stable: true}},
		{name: "large priority", s: State{Priority: 1 << 40}},
		{name: "unhealthy frontend", s: State{Frontends: map[string]bool{"a": false}}},
		{name: "unicode names", s: State{Frontends: map[string]bool{"fé": true}, Holder: map[string]string{"10.0.0.1": "lb-ü"}}},
		{name: "empty holder owner (nobody)", s: State{Holder: map[string]string{"10.0.0.1": ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeState(tt.s)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			got, err := DecodeState(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tt.s, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// Every node must gossip identical bytes for an identical state, or memberlist
// would see a metadata change (and re-broadcast) on every SetLocal.
func TestEncodeStateDeterministic(t *testing.T) {
	s := seedState()
	for k := range 20 {
		s.Frontends[strings.Repeat("f", k+1)] = k%2 == 0
	}
	want, err := EncodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		got, err := EncodeState(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("encoding differs between calls:\n%x\n%x", want, got)
		}
	}
}

func TestEncodeStateTooLarge(t *testing.T) {
	_, err := EncodeState(State{Fingerprint: strings.Repeat("x", MaxStateSize)})
	if !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("err = %v, want ErrStateTooLarge", err)
	}
}

func TestDecodeStateRejects(t *testing.T) {
	valid, err := EncodeState(seedState())
	if err != nil {
		t.Fatal(err)
	}
	withVersion := func(v byte) []byte {
		b := bytes.Clone(valid)
		b[0] = v
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{name: "nil", in: nil, want: "empty"},
		{name: "version 0", in: withVersion(0), want: "unknown format version 0"},
		{name: "version 2", in: withVersion(2), want: "unknown format version 2"},
		{name: "unknown flag", in: []byte{1, 0x80, 0, 0, 0, 0, 0, 0}, want: "unknown flags"},
		{name: "trailing byte", in: append(bytes.Clone(valid), 0), want: "trailing"},
		{name: "huge count", in: []byte{1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, want: "exceeds remaining"},
		{name: "bad health byte", in: []byte{1, 0, 0, 0, 0, 1, 1, 'a', 2, 0, 0}, want: "bad health byte"},
		{name: "duplicate frontend", in: []byte{1, 0, 0, 0, 0, 2, 1, 'a', 1, 1, 'a', 0, 0, 0}, want: "listed twice"},
		{name: "duplicate holder", in: []byte{1, 0, 0, 0, 0, 0, 0, 2, 1, 'v', 0, 1, 'v', 0}, want: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeState(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	// A state cut short anywhere is an error, not a shorter state.
	for n := range len(valid) {
		if _, err := DecodeState(valid[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: decoded without error", n, len(valid))
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	for _, s := range []State{{}, seedState(), {Maintenance: true, Priority: -1}} {
		b, err := EncodeState(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := DecodeState(in)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes (when it fits) to a canonical form
		// that decodes to the same state.
		b, err := EncodeState(s)
		if errors.Is(err, ErrStateTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("re-encode %+v: %v", s, err)
		}
		again, err := DecodeState(b)
		if err != nil {
			t.Fatalf("decode re-encoded %x: %v", b, err)
		}
		if diff := cmp.Diff(s, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-encode changed the state (-first +second):\n%s", diff)
		}
	})
}
