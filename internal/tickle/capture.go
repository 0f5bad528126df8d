package tickle

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Capture counts the answers to one takeover's tickles: a packet socket
// on the VIP's interface that sees, beside the kernel, every packet
// arriving there.
//
// Why a packet socket: the answer to a tickle is the client's duplicate
// ACK, which the kernel consumes (answering it with the reset) before any
// socket of ours could see it; only a tap sees each one with its 4-tuple.
// The kernel's counters (TcpExt, OutRsts) are per host and also count the
// resets for every stray segment, so they cannot say which tickled
// connections answered. A SOCK_DGRAM packet socket delivers the network
// header for IPv4 and IPv6 alike, and its socket filter (answerFilter)
// passes only TCP to the VIP without payload, so the proxy's traffic on
// the new holder stays in the kernel.
//
// It needs CAP_NET_RAW, which the tickles need too.
type Capture struct {
	f      *os.File
	ifname string
	tally  *Tally
}

// recvBuffer holds a burst of answers while the reader catches up: three
// rounds of 10 000 answers of a few hundred bytes of kernel memory each.
const recvBuffer = 16 << 20

// OpenCapture opens a capture of the answers to tickles for targets (all
// on the VIP address vip) arriving on the interface ifname. Open it
// before the tickles go out, or the first answers are missed.
func OpenCapture(ifname string, vip netip.Addr, targets []Target) (*Capture, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	filter, err := answerFilter(vip)
	if err != nil {
		return nil, err
	}
	// Protocol 0: the socket receives nothing until bound below, after
	// the filter is in place, so no unfiltered packet slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket to count tickle answers on %s: %w", ifname, os.NewSyscallError("socket", err))
	}
	fail := func(what string, err error) (*Capture, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s on %s: %w", what, ifname, os.NewSyscallError("setsockopt", err))
	}
	prog := make([]unix.SockFilter, len(filter))
	for i, in := range filter {
		prog[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail("attach the tickle answer filter", err)
	}
	// Best effort, FORCE first (root may exceed rmem_max): a small buffer
	// only makes the count a low bound, reported as Dropped.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
	}
	proto := htons(unix.ETH_P_IP)
	if vip.Unmap().Is6() {
		proto = htons(unix.ETH_P_IPV6)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind the tickle answer capture to %s: %w", ifname, os.NewSyscallError("bind", err))
	}
	f := os.NewFile(uintptr(fd), "tickle-answers-"+ifname)
	return &Capture{f: f, ifname: ifname, tally: NewTally(vip, targets)}, nil
}

// htons puts v in network byte order, as sockaddr_ll wants its protocol.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// Count reads answers until every target has answered or ctx ends, and
// returns the counts. Ending early matters: the capture would otherwise
// copy every pure ACK of the clients' reconnection storm to user space.
// It closes the capture: call it once.
func (c *Capture) Count(ctx context.Context) (Answers, error) {
	defer func() { _ = c.f.Close() }()
	// Ending ctx ends the read at once through the deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.f.SetReadDeadline(time.Now()) })
	defer stop()
	rc, err := c.f.SyscallConn()
	if err != nil {
		return Answers{}, fmt.Errorf("tickle answer capture on %s: %w", c.ifname, err)
	}
	buf := make([]byte, 128) // headers only: an answer has no payload
	var rerr error
	for ctx.Err() == nil && !c.tally.Complete() {
		var n int
		var from unix.Sockaddr
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return c.answers(), fmt.Errorf("read tickle answers on %s: %w", c.ifname, err)
		}
		if rerr != nil {
			return c.answers(), fmt.Errorf("read tickle answers on %s: %w", c.ifname, os.NewSyscallError("recvfrom", rerr))
		}
		// A packet socket bound to one protocol sees only what arrives;
		// this guards the count should it ever see what this host sends.
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		c.tally.Observe(buf[:min(n, len(buf))])
	}
	return c.answers(), nil
}

// Settled reports whether tg needs no further tickle (Tally.Settled); it
// may be called while Count runs.
func (c *Capture) Settled(tg Target, last bool) bool { return c.tally.Settled(tg, last) }

// Acked returns the acknowledgement number of tg's ACK answer
// (Tally.Acked); with Settled, Capture is the Sender's Answered.
func (c *Capture) Acked(tg Target) (uint32, bool) { return c.tally.Acked(tg) }

// Closed returns the targets whose client had no socket left for the
// connection (Tally.Closed).
func (c *Capture) Closed() []Target { return c.tally.Closed() }

// answers is the tally with the kernel's drop count.
func (c *Capture) answers() Answers {
	a := c.tally.Answers()
	rc, err := c.f.SyscallConn()
	if err != nil {
		return a
	}
	_ = rc.Control(func(fd uintptr) {
		if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			a.Dropped = int(st.Drops)
		}
	})
	return a
}
