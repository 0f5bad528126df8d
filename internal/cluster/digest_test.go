package cluster

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/test/support"
)

func TestDigestRoundTripsAndRejectsOtherFormats(t *testing.T) {
	meta, err := EncodeState(seedState())
	if err != nil {
		t.Fatal(err)
	}
	p := encodeDigest(meta)
	if sum, ok := decodeDigest(p); !ok || sum != metaSum(meta) {
		t.Fatalf("decodeDigest(encodeDigest) = %x, %v; want %x, true", sum, ok, metaSum(meta))
	}
	other := append([]byte{}, meta...)
	other[len(other)-1] ^= 1
	if metaSum(other) == metaSum(meta) {
		t.Fatal("states differing in one bit have the same digest")
	}
	for name, b := range map[string][]byte{
		"empty (a node without digests)": nil,
		"another version":                append([]byte{digestVersion + 1}, p[1:]...),
		"short":                          p[:8],
		"long":                           append(append([]byte{}, p...), 0),
	} {
		if _, ok := decodeDigest(b); ok {
			t.Errorf("%s: decoded, want ignored", name)
		}
	}
}

func TestStalenessPullsOnlyAStateStaleForLong(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type ack struct {
		at           time.Time
		known, acked uint64
		wantPull     bool
		why          string
	}
	steps := []ack{
		{at(0), 1, 1, false, "acks agree with the state known here"},
		{at(100 * time.Millisecond), 1, 2, false, "a new state may still be on its way"},
		{at(300 * time.Millisecond), 1, 2, false, "still within a broadcast's retransmissions"},
		{at(500 * time.Millisecond), 1, 2, true, "the same other state for staleAfter: an update was lost"},
		{at(700 * time.Millisecond), 1, 2, false, "a pull was asked for within staleAfter"},
		{at(950 * time.Millisecond), 1, 2, true, "the pull did not help: ask again"},
		{at(time.Second), 2, 2, false, "the pull brought it"},
		{at(1100 * time.Millisecond), 2, 3, false, "a newer state starts its own wait"},
		{at(1400 * time.Millisecond), 2, 4, false, "and another one restarts it"},
		{at(1700 * time.Millisecond), 2, 4, false, "not stale for staleAfter yet"},
		{at(1800 * time.Millisecond), 2, 4, true, "stale for staleAfter"},
	}
	var s staleness
	for _, st := range steps {
		if got := s.observe(st.known, st.acked, st.at); got != st.wantPull {
			t.Errorf("at +%s (known %d, acked %d): pull %v, want %v: %s",
				st.at.Sub(t0), st.known, st.acked, got, st.wantPull, st.why)
		}
	}
}

// lossyProxy stands in the path to a node: datagrams to it are dropped while
// drop is set, streams always pass. The node advertises the proxy's address,
// so its peers send through it, while what it sends goes out directly.
type lossyProxy struct {
	drop    atomic.Bool
	dropped atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newLossyProxy(t *testing.T, listen, target netip.AddrPort) *lossyProxy {
	t.Helper()
	p := &lossyProxy{}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		t.Fatal(err)
	}
	ln := support.Listen(t, listen.String())
	t.Cleanup(func() {
		_ = pc.Close()
		_ = out.Close()
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if p.drop.Load() {
				p.dropped.Add(1)
				continue
			}
			_, _ = out.Write(buf[:n])
		}
	}()
	go func() {
		defer p.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			to, err := net.Dial("tcp", target.String())
			if err != nil {
				_ = in.Close()
				continue
			}
			p.track(in, to)
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			go pipe(to, in)
			go pipe(in, to)
		}
	}()
	return p
}

// track keeps conns for the cleanup to close.
func (p *lossyProxy) track(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, conns...)
}

// A state update lost on its way (here dropped on the wire; memberlist can
// also drop one from its own queue) reaches the peer within about a second
// anyway: the acks to the peer's probes tell it the state it has is old,
// and it pulls the new one, where it would otherwise wait for the periodic
// push/pull, up to 10 s.
func TestLostStateUpdateIsPulled(t *testing.T) {
	// The periodic full exchange would also repair the loss, at a random
	// moment; it is pushed out of the test so that only the pull can.
	noPushPull := func(cfg Config) *node {
		rec := support.NewLog()
		c, err := New(cfg, rec.Logger())
		if err != nil {
			t.Fatal(err)
		}
		c.pushPull = time.Hour
		return run(t, c, rec)
	}
	a := noPushPull(nodeConfig("lb1", anyPort("127.0.0.15")))
	addrA := bound(t, a)
	// lb2 listens on .16 and advertises .26, where the proxy forwards to it.
	direct := freePort(t, "127.0.0.16")
	front := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.26"), direct.Port())
	proxy := newLossyProxy(t, front, direct)
	cfgB := nodeConfig("lb2", direct, addrA)
	cfgB.AdvertiseAddr = front.Addr()
	b := noPushPull(cfgB)
	a.c.SetPeers([]netip.AddrPort{front})
	for _, n := range []*node{a, b} {
		waitReady(t, n, 5*time.Second)
		waitFor(t, n.c, 5*time.Second, "both members seen", func() bool { return len(n.c.Members()) == 2 })
	}

	// Every datagram to lb2 is lost while lb1 changes its state and
	// broadcasts it; streams pass, so the probes' TCP fallback keeps both
	// from suspecting the other, as on a link that drops one direction
	// for a moment. The window outlasts the broadcast's retransmissions
	// (three, 50 ms apart) several times over.
	want := seedState()
	proxy.drop.Store(true)
	a.c.SetLocal(want)
	window := time.NewTimer(600 * time.Millisecond)
	<-window.C
	proxy.drop.Store(false)
	if proxy.dropped.Load() == 0 {
		t.Fatal("no datagram to lb2 was dropped: the proxy is not in the path")
	}
	if m, _ := member(b.c, "lb1"); cmp.Equal(want, m.State, cmpopts.EquateEmpty()) {
		t.Fatal("lb2 has lb1's new state although every datagram to it was dropped")
	}

	took := waitFor(t, b.c, 3*time.Second, "lb2 sees lb1's new state", func() bool {
		m, ok := member(b.c, "lb1")
		return ok && cmp.Equal(want, m.State, cmpopts.EquateEmpty())
	})
	t.Logf("lost update repaired %s after the loss ended", took)
	if b.rec.Count(slog.LevelInfo, "gossip update was lost", "pulling it", "peer=lb1") == 0 {
		t.Errorf("lb2 did not log that it pulled lb1's state; log:\n%s", b.rec)
	}
	if n := b.c.StatePulls(); n == 0 {
		t.Error("lb2's pull count is 0 after a pull")
	}
}
