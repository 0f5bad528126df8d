package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// State is what a node gossips about itself in its memberlist metadata.
type State struct {
	Priority    int
	Eligible    bool
	Stable      bool
	Maintenance bool
	Frontends   map[string]bool // frontend name -> has a healthy server
	Holds       []string        // VIP addresses held now, e.g. "192.168.66.160"
	// Holder is this node's view of each VIP's owner, so operators can spot
	// nodes that disagree (split brain).
	Holder      map[string]string
	Fingerprint string
	Version     string
}

// MaxStateSize is the largest encoded state memberlist accepts as node metadata.
const MaxStateSize = 512

// stateFormat is the first byte of an encoded state; a node that meets an
// unknown format reports it instead of guessing.
const stateFormat byte = 1

const (
	flagEligible byte = 1 << iota
	flagStable
	flagMaintenance
	flagsKnown = flagEligible | flagStable | flagMaintenance
)

// ErrStateTooLarge means an encoded state does not fit in MaxStateSize.
var ErrStateTooLarge = errors.New("encoded state exceeds 512 bytes")

// EncodeState encodes s deterministically: maps are written in key order and
// Holds in the given order.
func EncodeState(s State) ([]byte, error) {
	b := make([]byte, 0, 128)
	b = append(b, stateFormat)
	var flags byte
	if s.Eligible {
		flags |= flagEligible
	}
	if s.Stable {
		flags |= flagStable
	}
	if s.Maintenance {
		flags |= flagMaintenance
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, int64(s.Priority))
	b = appendString(b, s.Fingerprint)
	b = appendString(b, s.Version)

	b = binary.AppendUvarint(b, uint64(len(s.Frontends)))
	for _, k := range slices.Sorted(maps.Keys(s.Frontends)) {
		b = appendString(b, k)
		if s.Frontends[k] {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(s.Holds)))
	for _, h := range s.Holds {
		b = appendString(b, h)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Holder)))
	for _, k := range slices.Sorted(maps.Keys(s.Holder)) {
		b = appendString(b, k)
		b = appendString(b, s.Holder[k])
	}
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("encode state: %d bytes: %w", len(b), ErrStateTooLarge)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeState decodes what EncodeState wrote. It rejects unknown formats,
// truncated or trailing bytes and duplicate keys with an error; empty maps
// and lists decode as nil.
func DecodeState(b []byte) (State, error) {
	d := decoder{b: b}
	s, err := d.state()
	if err != nil {
		return State{}, fmt.Errorf("decode state: %w", err)
	}
	return s, nil
}

type decoder struct {
	b []byte
}

var errTruncated = errors.New("truncated")

func (d *decoder) state() (State, error) {
	s, err := d.head()
	if err != nil {
		return s, err
	}
	if s.Frontends, err = d.frontends(); err != nil {
		return s, err
	}
	if s.Holds, err = d.holds(); err != nil {
		return s, err
	}
	if s.Holder, err = d.holders(); err != nil {
		return s, err
	}
	if len(d.b) != 0 {
		return s, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return s, nil
}

// head reads the format version, the flags, the priority, the config
// fingerprint and the build version.
func (d *decoder) head() (State, error) {
	var s State
	if len(d.b) == 0 {
		return s, errors.New("empty")
	}
	if d.b[0] != stateFormat {
		return s, fmt.Errorf("unknown format version %d (this node speaks %d)", d.b[0], stateFormat)
	}
	d.b = d.b[1:]
	flags, err := d.byte()
	if err != nil {
		return s, err
	}
	if flags&^flagsKnown != 0 {
		return s, fmt.Errorf("unknown flags %#x", flags)
	}
	s.Eligible = flags&flagEligible != 0
	s.Stable = flags&flagStable != 0
	s.Maintenance = flags&flagMaintenance != 0
	prio, n := binary.Varint(d.b)
	if n <= 0 {
		return s, errors.New("bad priority")
	}
	d.b = d.b[n:]
	s.Priority = int(prio)
	if s.Fingerprint, err = d.string(); err != nil {
		return s, err
	}
	s.Version, err = d.string()
	return s, err
}

// frontends reads each frontend's health; nil when there are none.
func (d *decoder) frontends() (map[string]bool, error) {
	count, err := d.count()
	if err != nil {
		return nil, err
	}
	var out map[string]bool
	for range count {
		k, err := d.string()
		if err != nil {
			return nil, err
		}
		v, err := d.byte()
		if err != nil {
			return nil, err
		}
		if v > 1 {
			return nil, fmt.Errorf("frontend %q: bad health byte %d", k, v)
		}
		if out == nil {
			out = make(map[string]bool, count)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("frontend %q listed twice", k)
		}
		out[k] = v == 1
	}
	return out, nil
}

// holds reads the VIPs the member holds; nil when none.
func (d *decoder) holds() ([]string, error) {
	count, err := d.count()
	if err != nil {
		return nil, err
	}
	var out []string
	for range count {
		h, err := d.string()
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// holders reads whom the member elected for each VIP; nil when none.
func (d *decoder) holders() (map[string]string, error) {
	count, err := d.count()
	if err != nil {
		return nil, err
	}
	var out map[string]string
	for range count {
		k, err := d.string()
		if err != nil {
			return nil, err
		}
		v, err := d.string()
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = make(map[string]string, count)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("holder of %q listed twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func (d *decoder) byte() (byte, error) {
	if len(d.b) == 0 {
		return 0, errTruncated
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v, nil
}

// count reads a list length; every element takes at least one byte, so a
// count beyond the remaining input is corrupt and must not drive allocation.
func (d *decoder) count() (int, error) {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		return 0, errTruncated
	}
	d.b = d.b[n:]
	if v > uint64(len(d.b)) {
		return 0, fmt.Errorf("count %d exceeds remaining %d bytes", v, len(d.b))
	}
	return int(v), nil
}

func (d *decoder) string() (string, error) {
	l, err := d.count()
	if err != nil {
		return "", err
	}
	s := string(d.b[:l])
	d.b = d.b[l:]
	return s, nil
}
