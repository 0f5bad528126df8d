package tickle

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/net/bpf"
)

// Answers counts the tickled connections whose clients answered, for
// the log line "tickled N, acknowledged M" and for status.
type Answers struct {
	// Acknowledged is how many tickled connections the client answered
	// with a pure ACK carrying its real sequence numbers: it still had
	// the connection, and the reset this node's kernel sent back ends it.
	Acknowledged int
	// Closed is how many were answered only with a reset: the client had
	// already closed the connection (after kill -9 the old host's kernel
	// closes the sockets itself, so the tickle finds nothing to end).
	Closed int
	// Dropped is how many packets the kernel dropped before the count
	// read them (a full receive buffer): the counts are then low bounds.
	Dropped int
}

// answerKind is what one packet from a tickled connection says.
type answerKind uint8

const (
	noAnswer answerKind = iota
	answerReset
	answerAck
)

// Tally counts the answers to one takeover's tickles. Each connection
// counts once: as acknowledged if any pure ACK came from it (the reset
// that ends it makes the client answer later rounds with resets), else
// as closed if a reset did. The capture feeds it while the Sender asks
// it which connections need no repeat, so it is safe for concurrent use.
type Tally struct {
	vip    netip.Addr
	mu     sync.Mutex
	seen   map[Target]answerKind
	acked  map[Target]uint32 // the acknowledgement number of a target's first ACK
	silent int               // targets that have not answered yet
}

// NewTally returns a tally of the answers to tickles for targets, all on
// the VIP address vip.
func NewTally(vip netip.Addr, targets []Target) *Tally {
	t := &Tally{vip: vip.Unmap(), seen: make(map[Target]answerKind, len(targets)), acked: map[Target]uint32{}}
	for _, tg := range targets {
		t.seen[normal(tg)] = noAnswer
	}
	t.silent = len(t.seen)
	return t
}

func normal(t Target) Target {
	return Target{
		VIP:    netip.AddrPortFrom(t.VIP.Addr().Unmap(), t.VIP.Port()),
		Client: netip.AddrPortFrom(t.Client.Addr().Unmap(), t.Client.Port()),
	}
}

// Observe takes one IP packet that arrived on the VIP's interface and
// counts it if it is an answer from a tickled connection; anything else
// (another connection's packet, a truncated one) is ignored.
func (t *Tally) Observe(pkt []byte) {
	tg, kind, ack, ok := parseAnswer(pkt)
	if !ok || tg.VIP.Addr() != t.vip {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, tickled := t.seen[tg]
	if tickled && kind == answerAck {
		if _, known := t.acked[tg]; !known {
			t.acked[tg] = ack
		}
	}
	if tickled && kind > old {
		t.seen[tg] = kind
		if old == noAnswer {
			t.silent--
		}
	}
}

// Complete reports whether every target has answered. The count need not
// go on then: a client that answered with an ACK gets our reset and
// answers later rounds with resets, which change nothing, and one that
// answered with a reset has nothing left to answer with.
func (t *Tally) Complete() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.silent == 0
}

// Settled reports whether tg needs no further tickle: its client answered
// with a reset (it has no socket left for the connection), or with an
// ACK, which this node's kernel answered with the reset that ends the
// connection, unless last is set. The last round still repeats those in
// case that reset was lost. Skipping them keeps the repeats, which fall
// into the clients' reconnection storm, down to the few that need them.
func (t *Tally) Settled(tg Target, last bool) bool {
	t.mu.Lock()
	k := t.seen[normal(tg)]
	t.mu.Unlock()
	return k == answerReset || (k == answerAck && !last)
}

// Acked returns the acknowledgement number of tg's first ACK answer: the
// sequence number a reset needs for the client to accept it.
func (t *Tally) Acked(tg Target) (uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq, ok := t.acked[normal(tg)]
	return seq, ok
}

// Closed returns the targets whose client answered with a reset and
// never with an ACK: it had no socket left for the connection.
func (t *Tally) Closed() []Target {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Target
	for tg, k := range t.seen {
		if k == answerReset {
			out = append(out, tg)
		}
	}
	return out
}

// Answers returns the counts so far.
func (t *Tally) Answers() Answers {
	t.mu.Lock()
	defer t.mu.Unlock()
	var a Answers
	for _, k := range t.seen {
		switch k {
		case answerAck:
			a.Acknowledged++
		case answerReset:
			a.Closed++
		}
	}
	return a
}

// TCP flags in byte 13 of the header.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// parseAnswer reads an IPv4 or IPv6 packet carrying a TCP segment without
// payload and says which connection it belongs to (as a Target: the VIP
// side is the destination), its acknowledgement number, and whether it is
// an answer: a pure ACK (no
// SYN, FIN or RST) or a reset. IPv6 extension headers are not followed:
// a client's answer to a tickle carries none.
func parseAnswer(pkt []byte) (Target, answerKind, uint32, bool) {
	if len(pkt) < 1 {
		return Target{}, noAnswer, 0, false
	}
	var src, dst netip.Addr
	var tcp []byte
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl+20 || pkt[9] != 6 {
			return Target{}, noAnswer, 0, false
		}
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if total > len(pkt) || total < ihl+20 {
			return Target{}, noAnswer, 0, false
		}
		src, _ = netip.AddrFromSlice(pkt[12:16])
		dst, _ = netip.AddrFromSlice(pkt[16:20])
		tcp = pkt[ihl:total]
	case 6:
		if len(pkt) < 60 || pkt[6] != 6 {
			return Target{}, noAnswer, 0, false
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if 40+plen > len(pkt) || plen < 20 {
			return Target{}, noAnswer, 0, false
		}
		src, _ = netip.AddrFromSlice(pkt[8:24])
		dst, _ = netip.AddrFromSlice(pkt[24:40])
		tcp = pkt[40 : 40+plen]
	default:
		return Target{}, noAnswer, 0, false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff != len(tcp) {
		return Target{}, noAnswer, 0, false // a payload: data, not an answer
	}
	tg := Target{
		Client: netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		VIP:    netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
	}
	ack := binary.BigEndian.Uint32(tcp[8:12])
	flags := tcp[13]
	switch {
	case flags&tcpRST != 0:
		return tg, answerReset, ack, true
	case flags&(tcpSYN|tcpFIN) == 0 && flags&tcpACK != 0:
		return tg, answerAck, ack, true
	}
	return tg, noAnswer, ack, false
}

// answerFilter is the socket filter of the capture (classic BPF over the
// network header, as a SOCK_DGRAM packet socket delivers it): TCP to the
// VIP without payload, SYN or FIN. It keeps the proxy's own data traffic
// to the VIP, which follows the takeover at full speed, and the clients'
// new handshakes and closes out of user space; the pure ACKs of live
// connections still pass and are told apart by Tally.
func answerFilter(vip netip.Addr) ([]bpf.RawInstruction, error) {
	vip = vip.Unmap()
	const accept, drop = 0xffff, 0
	var prog []bpf.Instruction
	if vip.Is4() {
		a := vip.As4()
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4},
			bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6},
			bpf.LoadAbsolute{Off: 16, Size: 4}, // destination
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[:])},
			// X = IP header length. No SYN or FIN: a client's
			// handshakes and closes in the reconnection storm stay in
			// the kernel.
			bpf.LoadMemShift{Off: 0},
			bpf.LoadIndirect{Off: 13, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: tcpSYN | tcpFIN},
			// A = X + TCP header length; it must be the packet's total
			// length: no payload.
			bpf.LoadIndirect{Off: 12, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.TAX{},
			bpf.LoadAbsolute{Off: 2, Size: 2}, // total length
		}
	} else {
		a := vip.As16()
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6},
			bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6},
		}
		for i := range 4 {
			prog = append(prog,
				bpf.LoadAbsolute{Off: uint32(24 + 4*i), Size: 4},
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[4*i : 4*i+4])})
		}
		prog = append(prog,
			// No SYN or FIN, as for IPv4.
			bpf.LoadAbsolute{Off: 40 + 13, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: tcpSYN | tcpFIN},
			// X = TCP header length; it must be the payload length.
			bpf.LoadAbsolute{Off: 40 + 12, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c},
			bpf.TAX{},
			bpf.LoadAbsolute{Off: 4, Size: 2}, // payload length
		)
	}
	prog = append(prog,
		bpf.JumpIfX{Cond: bpf.JumpEqual, SkipFalse: 1},
		bpf.RetConstant{Val: accept},
		bpf.RetConstant{Val: drop},
	)
	// Every header or address check that fails skips to the drop.
	for i, ins := range prog {
		if j, ok := ins.(bpf.JumpIf); ok {
			j.SkipFalse = uint8(len(prog) - i - 2)
			prog[i] = j
		}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble the answer filter for %s: %w", vip, err)
	}
	return raw, nil
}
