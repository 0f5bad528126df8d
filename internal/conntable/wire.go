package conntable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
)

// The wire format of one chunk, all integers big-endian:
//
//	magic "ht", format 1, kind (0 snapshot, 1 delta adds, 2 delta removes)
//	epoch u64, base u64 (0 in a snapshot), version u64
//	chunk index u16, chunk count u16
//	VIP: family (4 or 6) then 4 or 16 bytes
//	sections u16, each: frontend port u16, groups u16, each:
//	    client address (the VIP's length), ports u16, then each port u16
//
// Grouping by frontend port and client address costs 2 bytes per
// connection for a client with several, the usual case for an API
// server's clients (a kubelet, kube-proxy and a CNI agent per node).
// Chunks of one update share base, version and count; each can be
// applied on its own, since an update names every changed connection
// once with its final state.

const (
	magic0, magic1 = 'h', 't'
	format         = 1

	kindSnapshot = 0
	kindDelta    = 1 // adds; a delta's removes are kindDelta+1 on the wire
)

// MinChunk is the smallest chunk size Encode accepts: a header, one
// section and one group of one IPv6 client.
const MinChunk = 128

// DefaultChunk fits a chunk, with the cluster's encryption and framing,
// in one UDP datagram on a 1500-byte MTU.
const DefaultChunk = 1200

type header struct {
	kind          byte // kindSnapshot or kindDelta
	removes       bool // a delta chunk of removals
	epoch         uint64
	base, version uint64
	index, count  int
	vip           netip.Addr
}

func addrLen(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 16
}

func headerLen(vip netip.Addr) int { return 4 + 8*3 + 2*2 + 1 + addrLen(vip) + 2 }

// split cuts sorted conns into runs that each encode in at most maxBytes.
func split(conns []Conn, hlen, alen, maxBytes int) [][]Conn {
	var out [][]Conn
	start, size := 0, hlen
	for i, c := range conns {
		var cost int
		switch {
		case i > start && c.VIP.Port() == conns[i-1].VIP.Port() && c.Client.Addr() == conns[i-1].Client.Addr():
			cost = 2
		case i > start && c.VIP.Port() == conns[i-1].VIP.Port():
			cost = alen + 4
		default:
			cost = 4 + alen + 4
		}
		// A group's port count is a u16, and so are section counts:
		// start a new chunk well before either could overflow.
		if size+cost > maxBytes || i-start >= math.MaxUint16 {
			out = append(out, conns[start:i])
			start, size, cost = i, hlen, 4+alen+4
		}
		size += cost
	}
	if start < len(conns) {
		out = append(out, conns[start:])
	}
	return out
}

// encode writes adds and removes (unsorted; sorted here) as chunks of at
// most maxBytes. A snapshot or an update with no changes is one chunk
// with no sections, so receivers still learn the version.
func encode(h header, adds, removes []Conn, maxBytes int) ([][]byte, error) {
	if maxBytes < MinChunk {
		return nil, fmt.Errorf("encode connection table: chunk size %d is below %d", maxBytes, MinChunk)
	}
	slices.SortFunc(adds, compare)
	slices.SortFunc(removes, compare)
	hlen, alen := headerLen(h.vip), addrLen(h.vip)
	addChunks := split(adds, hlen, alen, maxBytes)
	removeChunks := split(removes, hlen, alen, maxBytes)
	if len(addChunks) == 0 && len(removeChunks) == 0 {
		addChunks = [][]Conn{nil}
	}
	total := len(addChunks) + len(removeChunks)
	if total > math.MaxUint16 {
		return nil, fmt.Errorf("encode connection table: %d chunks, more than %d", total, math.MaxUint16)
	}
	h.count = total
	out := make([][]byte, 0, total)
	for i, part := range slices.Concat(addChunks, removeChunks) {
		h.index = i
		h.removes = i >= len(addChunks)
		out = append(out, encodeChunk(h, part, maxBytes))
	}
	return out, nil
}

func encodeChunk(h header, conns []Conn, capacity int) []byte {
	b := make([]byte, 0, capacity)
	kind := h.kind
	if h.removes {
		kind++
	}
	b = append(b, magic0, magic1, format, kind)
	b = binary.BigEndian.AppendUint64(b, h.epoch)
	b = binary.BigEndian.AppendUint64(b, h.base)
	b = binary.BigEndian.AppendUint64(b, h.version)
	b = binary.BigEndian.AppendUint16(b, uint16(h.index))
	b = binary.BigEndian.AppendUint16(b, uint16(h.count))
	if h.vip.Is4() {
		b = append(b, 4)
	} else {
		b = append(b, 6)
	}
	b = append(b, h.vip.AsSlice()...)
	// Counts are patched in once each section or group is complete.
	sectionsAt := len(b)
	b = append(b, 0, 0)
	var sections, groupsAt, groups, portsAt, ports int
	for i, c := range conns {
		newSection := i == 0 || c.VIP.Port() != conns[i-1].VIP.Port()
		if newSection {
			sections++
			b = binary.BigEndian.AppendUint16(b, c.VIP.Port())
			groupsAt, groups = len(b), 0
			b = append(b, 0, 0)
		}
		if newSection || c.Client.Addr() != conns[i-1].Client.Addr() {
			groups++
			binary.BigEndian.PutUint16(b[groupsAt:], uint16(groups))
			b = append(b, c.Client.Addr().AsSlice()...)
			portsAt, ports = len(b), 0
			b = append(b, 0, 0)
		}
		ports++
		binary.BigEndian.PutUint16(b[portsAt:], uint16(ports))
		b = binary.BigEndian.AppendUint16(b, c.Client.Port())
	}
	binary.BigEndian.PutUint16(b[sectionsAt:], uint16(sections))
	return b
}

// chunk is one decoded chunk.
type chunk struct {
	header
	conns []Conn
}

var errShort = errors.New("truncated")

// reader walks a chunk, remembering the first overrun.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// maxConnsPerChunk bounds what one chunk may claim before it is read:
// even a forged chunk cannot make the decoder allocate more than its own
// length allows (2 bytes per connection at the least).
func maxConnsPerChunk(n int) int { return n / 2 }

// decode parses one chunk, checking every count against the bytes there.
func decode(b []byte) (chunk, error) {
	var c chunk
	r := &reader{b: b}
	if err := c.decodeHeader(r); err != nil {
		return c, fmt.Errorf("decode connection table chunk: %w", err)
	}
	c.conns = make([]Conn, 0, min(64, maxConnsPerChunk(len(b))))
	sections := r.u16()
	for range sections {
		vip := netip.AddrPortFrom(c.vip, uint16(r.u16()))
		groups := r.u16()
		for range groups {
			if !c.decodeGroup(r, vip) {
				break
			}
		}
	}
	if r.err != nil {
		return c, fmt.Errorf("decode connection table chunk %d of %d: entries %w", c.index, c.count, r.err)
	}
	if len(r.b) != 0 {
		return c, fmt.Errorf("decode connection table chunk %d of %d: %d bytes after the entries", c.index, c.count, len(r.b))
	}
	return c, nil
}

// decodeHeader reads the chunk's header and refuses one that is not a
// chunk of this format or contradicts itself. A VIP address cut short is
// left for the entries to report.
func (c *chunk) decodeHeader(r *reader) error {
	m := r.take(4)
	if r.err != nil {
		return fmt.Errorf("header %w", r.err)
	}
	if m[0] != magic0 || m[1] != magic1 {
		return errors.New("not a connection table chunk")
	}
	if m[2] != format {
		return fmt.Errorf("format %d, this version reads %d", m[2], format)
	}
	switch m[3] {
	case kindSnapshot:
		c.kind = kindSnapshot
	case kindDelta, kindDelta + 1:
		c.kind, c.removes = kindDelta, m[3] == kindDelta+1
	default:
		return fmt.Errorf("kind %d unknown", m[3])
	}
	c.epoch, c.base, c.version = r.u64(), r.u64(), r.u64()
	c.index, c.count = r.u16(), r.u16()
	fam := r.take(1)
	if r.err != nil {
		return fmt.Errorf("header %w", r.err)
	}
	switch fam[0] {
	case 4:
		if a := r.take(4); a != nil {
			c.vip = netip.AddrFrom4([4]byte(a))
		}
	case 6:
		if a := r.take(16); a != nil {
			c.vip = netip.AddrFrom16([16]byte(a))
		}
	default:
		return fmt.Errorf("address family %d unknown", fam[0])
	}
	return c.check()
}

// check refuses a header whose numbers contradict each other.
func (h *header) check() error {
	if h.count == 0 || h.index >= h.count {
		return fmt.Errorf("chunk %d of %d", h.index, h.count)
	}
	if h.kind == kindSnapshot && h.base != 0 {
		return fmt.Errorf("snapshot with base version %d", h.base)
	}
	if h.kind == kindDelta && h.base > h.version {
		return fmt.Errorf("delta from version %d back to %d", h.base, h.version)
	}
	return nil
}

// decodeGroup reads one client address and its ports, connections to
// vip. It reports false when the chunk ran out.
func (c *chunk) decodeGroup(r *reader, vip netip.AddrPort) bool {
	a := r.take(addrLen(c.vip))
	ports := r.u16()
	if r.err != nil {
		return false
	}
	var client netip.Addr
	if len(a) == 4 {
		client = netip.AddrFrom4([4]byte(a))
	} else {
		client = netip.AddrFrom16([16]byte(a))
	}
	for range ports {
		p := r.u16()
		if r.err != nil {
			return false
		}
		c.conns = append(c.conns, Conn{VIP: vip, Client: netip.AddrPortFrom(client, uint16(p))})
	}
	return true
}
