package cluster

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/test/support"
)

// memberlist's message type for an encrypted message (net.go).
const encryptMsgType = 10

// hugeStream opens a gossip stream to addr that announces an encrypted
// message of almost 20 MB, memberlist's own limit, and sends junk until the
// node stops reading or all of it is sent. It returns how many bytes of
// the message body the node let it send.
func hugeStream(t *testing.T, addr netip.AddrPort) int64 {
	t.Helper()
	// Loopback SYNs wait for softirq time, scarce on a loaded machine.
	c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		return 0
	}
	defer func() { _ = c.Close() }()
	const announced = 20<<20 - 1
	// A stream closed on arrival fails these writes: it sent nothing.
	if err := memberlist.AddLabelHeaderToStream(c, gossipLabel); err != nil {
		return 0
	}
	head := []byte{encryptMsgType, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(head[1:], announced)
	if _, err := c.Write(head); err != nil {
		return 0
	}
	// Bounded in time: a node that reads everything takes well under
	// this on loopback; one that stops reading makes a write fail.
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	chunk := make([]byte, 64<<10)
	var sent int64
	for sent < announced {
		n, err := c.Write(chunk[:min(int64(len(chunk)), announced-sent)])
		sent += int64(n)
		if err != nil {
			break
		}
	}
	return sent
}

// TestJunkStreamsCannotMakeTheNodeBufferMuch floods a real node with 30
// unauthenticated streams that each announce a 20 MB message. memberlist
// alone buffers all of it before it can refuse it (30 streams took a node
// from 21 MB to 876 MB of RSS); with the limits, the node reads at most
// maxStreamBytes of each, and a real peer still joins afterwards.
func TestJunkStreamsCannotMakeTheNodeBufferMuch(t *testing.T) {
	addrA, addrB := freePort(t, "127.0.0.81"), freePort(t, "127.0.0.82")
	cfg := nodeConfig("lb1", addrA)
	cfg.JoinTimeout = 0
	a := start(t, cfg)
	waitReady(t, a, 5*time.Second)

	const streams = 30
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent []int64
	for range streams {
		wg.Go(func() {
			n := hugeStream(t, addrA)
			mu.Lock()
			sent = append(sent, n)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The documented cap (docs/security.md), every byte of a stream
	// counted, headers included.
	const perStream = 256 << 10
	if got, limit := a.c.limits.read.Load(), int64(streams*perStream); got > limit {
		t.Errorf("the node read %d bytes from %d junk streams, want at most %d (%d each)", got, streams, limit, perStream)
	}
	for i, n := range sent {
		if n >= 20<<20-1 {
			t.Errorf("junk stream %d sent all %d bytes: the node read a whole 20 MB message", i, n)
		}
	}
	t.Logf("read %d bytes from %d streams; %d refused on arrival", a.c.limits.read.Load(), streams, a.c.limits.refused.Load())

	b := start(t, nodeConfig("lb2", addrB, addrA))
	waitFor(t, b.c, 5*time.Second, "lb2 joins lb1 after the flood", func() bool { return len(b.c.Members()) == 2 })
	waitFor(t, a.c, 5*time.Second, "lb1 sees lb2 after the flood", func() bool { return len(a.c.Members()) == 2 })
}

// newBareTransport is the node's transport without memberlist behind it,
// so a test can hold the streams it hands over as long as it likes.
func newBareTransport(t *testing.T, ip string, rec *support.Log) (*silenceTransport, netip.AddrPort) {
	t.Helper()
	log := rec.Logger()
	refusals := newRefusalLog(logBridge{log: log}, log, time.Now)
	nt, err := listenGossip(netip.AddrPortFrom(netip.MustParseAddr(ip), 0), refusals, nil, log)
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	tr := newSilenceTransport(nt, &atomic.Int64{}, newStreamLimits(maxInboundStreams, maxStreamBytes), refusals, func(_ string, c net.Conn) { _ = c.Close() }, func() [][]byte { return [][]byte{nil} })
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr, netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(nt.Port()))
}

// receive waits for the transport to hand over a stream.
func receive(t *testing.T, tr *silenceTransport) net.Conn {
	t.Helper()
	select {
	case c := <-tr.StreamCh():
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no stream handed over within 5s")
		return nil
	}
}

// closedAtOnce reports whether the node closed c without reading from it.
func closedAtOnce(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func TestInboundStreamsAreCappedAndExcessClosedAtOnce(t *testing.T) {
	rec := support.NewLog()
	tr, addr := newBareTransport(t, "127.0.0.83", rec)
	dial := func() net.Conn {
		t.Helper()
		// Loopback SYNs wait for softirq time, scarce on a loaded machine.
		c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	var held []net.Conn
	for range maxInboundStreams {
		dial()
		held = append(held, receive(t, tr))
	}
	// Every slot is taken by a stream memberlist is still reading.
	over := dial()
	if !closedAtOnce(t, over) {
		t.Fatal("a stream over the cap was left open")
	}
	if got := tr.limits.refused.Load(); got != 1 {
		t.Fatalf("%d streams refused, want 1", got)
	}
	if got := rec.Count(slog.LevelWarn, "dropped gossip from a sender", "too many gossip streams"); got != 1 {
		t.Fatalf("%d warnings about the refused stream, want 1", got)
	}
	// Done with one: its slot is free for the next stream.
	_ = held[0].Close()
	dial()
	_ = receive(t, tr).Close()
	for _, c := range held[1:] {
		_ = c.Close()
	}
	if got := len(tr.limits.slots); got != 0 {
		t.Fatalf("%d slots still taken after every stream closed", got)
	}
}

func TestStreamReadsStopAtTheLimit(t *testing.T) {
	tr, addr := newBareTransport(t, "127.0.0.84", support.NewLog())
	// Loopback SYNs wait for softirq time, scarce on a loaded machine.
	c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	const limit = 256 << 10 // documented in docs/security.md
	go func() {
		// Twice the limit; the write fails once the node stops reading.
		_, _ = c.Write(make([]byte, 2*limit))
	}()
	s := receive(t, tr)
	defer func() { _ = s.Close() }()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, s)
	if !errors.Is(err, errStreamTooLong) || n != limit {
		t.Fatalf("read %d bytes, then %v; want %d bytes, then %v", n, err, limit, errStreamTooLong)
	}
}
