package witness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Prober sends one reachability probe to target.
type Prober interface {
	// Probe returns nil when target answered before ctx ended. It must be
	// safe for concurrent use.
	Probe(ctx context.Context, target netip.Addr) error
}

// IANA protocol numbers, as icmp.ParseMessage wants them.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// icmpProber is a Prober sending ICMP echo requests. It is safe for concurrent
// use: each probe opens its own socket, in the network namespace of the
// calling thread, and closes it before returning.
type icmpProber struct {
	id  uint16        // echo identifier of this prober (raw sockets only)
	seq atomic.Uint32 // low 16 bits are the next sequence number
	// unprivileged is set once a raw socket was refused, so later probes
	// go straight to the datagram ICMP socket.
	unprivileged atomic.Bool
	forceUDP     bool // tests: skip the raw socket
}

// NewICMP returns an ICMP echo prober. It uses a raw socket (needs
// CAP_NET_RAW) and falls back to an unprivileged datagram ICMP socket
// (needs net.ipv4.ping_group_range to cover the process's group) when the
// raw socket is refused with EPERM.
func NewICMP() Prober {
	return newICMP(false)
}

func newICMP(forceUDP bool) *icmpProber {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	p := &icmpProber{id: binary.BigEndian.Uint16(b[:2]), forceUDP: forceUDP}
	p.seq.Store(uint32(binary.BigEndian.Uint16(b[2:])))
	return p
}

// Probe sends one echo request to target and waits for the matching reply
// until ctx ends.
func (p *icmpProber) Probe(ctx context.Context, target netip.Addr) error {
	target = target.Unmap()
	if !target.IsValid() {
		return errors.New("probe witness: invalid target address")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("probe witness %s: %w", target, err)
	}
	conn, raw, err := p.listen(target.Is4())
	if err != nil {
		return fmt.Errorf("probe witness %s: open icmp socket: %w", target, err)
	}
	defer func() { _ = conn.Close() }()

	// Unblock reads and writes when ctx ends, whether by deadline or by
	// cancellation; the deadline alone would miss a cancel.
	if d, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(d); err != nil {
			return fmt.Errorf("probe witness %s: set deadline: %w", target, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	seq := uint16(p.seq.Add(1))
	var nonce [8]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails

	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := protoICMP
	if target.Is6() {
		reqType, replyType, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, protoICMPv6
	}
	req := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: int(p.id), Seq: int(seq), Data: nonce[:]}}
	// With a nil pseudo-header the ICMPv6 checksum is left to the kernel,
	// which fills it in for ICMPv6 raw and datagram sockets alike.
	wb, err := req.Marshal(nil)
	if err != nil {
		return fmt.Errorf("probe witness %s: build echo request: %w", target, err)
	}
	var dst net.Addr = &net.IPAddr{IP: target.AsSlice(), Zone: target.Zone()}
	if !raw {
		dst = &net.UDPAddr{IP: target.AsSlice(), Zone: target.Zone()}
	}
	if _, err := conn.WriteTo(wb, dst); err != nil {
		return p.fail(ctx, target, "send echo request", err)
	}

	want := echoWant{raw: raw, target: target, proto: proto, reply: replyType, id: int(p.id), seq: int(seq), data: nonce[:]}
	rb := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(rb)
		if err != nil {
			return p.fail(ctx, target, "wait for echo reply", err)
		}
		if want.match(from, rb[:n]) {
			return nil
		}
	}
}

// echoWant describes the one reply a probe waits for.
type echoWant struct {
	raw     bool // raw socket: every reply on the host arrives, not just ours
	target  netip.Addr
	proto   int
	reply   icmp.Type
	id, seq int
	data    []byte
}

// match reports whether b, read from from, is the awaited echo reply.
func (e echoWant) match(from net.Addr, b []byte) bool {
	if !sameAddr(from, e.target) {
		return false
	}
	m, err := icmp.ParseMessage(e.proto, b)
	if err != nil || m.Type != e.reply {
		return false
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || echo.Seq != e.seq || !bytes.Equal(echo.Data, e.data) {
		return false
	}
	// A datagram socket's identifier is chosen by the kernel, which
	// already delivers only this socket's replies; a raw socket sees
	// every reply on the host, so the identifier must match.
	return !e.raw || echo.ID == e.id
}

// fail words a socket error, preferring the context's reason when the
// context is what ended the probe.
func (p *icmpProber) fail(ctx context.Context, target netip.Addr, doing string, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The socket deadline is ctx's deadline; it may fire a moment
		// before ctx's own timer does.
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return fmt.Errorf("probe witness %s: no echo reply in time: %w", target, ctxErr)
		}
		return fmt.Errorf("probe witness %s: %w", target, ctxErr)
	}
	return fmt.Errorf("probe witness %s: %s: %w", target, doing, err)
}

// listen opens an ICMP socket for the family, raw if allowed. raw reports
// which kind it is, since addresses and reply matching differ.
func (p *icmpProber) listen(v4 bool) (conn *icmp.PacketConn, raw bool, err error) {
	rawNet, rawAddr, dgramNet := "ip4:icmp", "0.0.0.0", "udp4"
	if !v4 {
		rawNet, rawAddr, dgramNet = "ip6:ipv6-icmp", "::", "udp6"
	}
	if !p.forceUDP && !p.unprivileged.Load() {
		conn, err := icmp.ListenPacket(rawNet, rawAddr)
		if err == nil {
			filterEchoReplies(conn, v4)
			return conn, true, nil
		}
		if !errors.Is(err, syscall.EPERM) {
			return nil, false, err
		}
		p.unprivileged.Store(true)
	}
	conn, err = icmp.ListenPacket(dgramNet, rawAddr)
	if err != nil {
		return nil, false, err
	}
	return conn, false, nil
}

// filterEchoReplies asks the kernel to pass only echo replies to a raw
// socket, which otherwise sees all ICMP traffic of the host. It is only a
// saving: replies are matched in full anyway, so a failure is ignored.
func filterEchoReplies(conn *icmp.PacketConn, v4 bool) {
	if v4 {
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		_ = conn.IPv4PacketConn().SetICMPFilter(&f)
		return
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeEchoReply)
	_ = conn.IPv6PacketConn().SetICMPFilter(&f)
}

// sameAddr reports whether a reply's source is the probed address (zones
// aside: the kernel may or may not fill them in).
func sameAddr(from net.Addr, target netip.Addr) bool {
	var ip net.IP
	switch a := from.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == target.WithZone("")
}
