package cluster

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"halb/test/support"
)

func TestNextDeadStep(t *testing.T) {
	tests := []struct {
		dead, silenced bool
		want           deadStep
	}{
		{dead: false, silenced: false, want: stayAlive},
		{dead: false, silenced: true, want: die},
		{dead: true, silenced: true, want: stayDead},
		{dead: true, silenced: false, want: revive},
	}
	for _, tt := range tests {
		if got := nextDeadStep(tt.dead, tt.silenced); got != tt.want {
			t.Errorf("nextDeadStep(dead %v, silenced %v) = %d, want %d", tt.dead, tt.silenced, got, tt.want)
		}
	}
}

// The gossip sockets close so the kernel refuses connections, as after a
// process's death, and open again on the same port.
func TestGossipSocketsCloseAndReopen(t *testing.T) {
	s, err := listenGossip(netip.MustParseAddrPort("127.0.0.61:0"), newRefusalLog(io.Discard, slog.New(slog.DiscardHandler), time.Now), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer takeGossip(s)()
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.61"), uint16(s.Port()))
	from := netip.MustParseAddr("127.0.0.62")
	ctx := context.Background()
	if o := tcpProbe(ctx, from, addr, time.Second); o != probeConnected {
		t.Fatalf("open sockets: probe %v, want connected", o)
	}
	s.closeSockets()
	if o := tcpProbe(ctx, from, addr, time.Second); o != probeRefused {
		t.Fatalf("closed sockets: probe %v, want refused", o)
	}
	if err := s.open(); err != nil {
		t.Fatalf("open again: %v", err)
	}
	if got := s.Port(); got != int(addr.Port()) {
		t.Fatalf("reopened on port %d, want %d", got, addr.Port())
	}
	if o := tcpProbe(ctx, from, addr, time.Second); o != probeConnected {
		t.Fatalf("reopened sockets: probe %v, want connected", o)
	}
}

// A silenced node is detected the way a killed one is: its peer's probe is
// refused, well within memberlist's own detection time, and the node comes
// back afterwards.
func TestSilencedNodeIsRefusedLikeAKilledOne(t *testing.T) {
	a, b, _, _ := pair(t, "127.0.0.63", "127.0.0.64")
	waitFor(t, a.c, 5*time.Second, "lb1 hears lb2 beat", func() bool {
		a.c.hb.mu.Lock()
		defer a.c.hb.mu.Unlock()
		_, ok := a.c.hb.det.peers["lb2"]
		return ok
	})
	const silence = 1500 * time.Millisecond
	b.c.Silence(silence)
	took := waitFor(t, a.c, 2*time.Second, "lb2 not alive", func() bool {
		m, ok := member(a.c, "lb2")
		return !ok || !m.Alive
	})
	t.Logf("silenced lb2 seen down after %s", took)
	// memberlist alone takes about a second (probe, suspicion); the
	// heartbeat's refusal path takes a beat interval and a probe.
	if took > 600*time.Millisecond {
		t.Errorf("silenced node seen down after %s, want the refusal path (< 600ms)", took)
	}
	// The verdict is logged just after it is recorded, outside the lock
	// Members reads under.
	if !support.Eventually(2*time.Second, func() bool { return a.rec.Count(slog.LevelWarn, "refuses connections", "peer=lb2") > 0 }) {
		t.Error("lb2 was not declared down for refusing connections")
	}
	waitFor(t, a.c, silence+5*time.Second, "lb2 back and alive", func() bool {
		m, ok := member(a.c, "lb2")
		return ok && m.Alive
	})
	if b.rec.Count(slog.LevelInfo, "hard drill over") != 1 {
		t.Error("lb2 did not log its return once")
	}
}

// takeGossip plays memberlist's part for bare gossip sockets: it takes
// every stream (closing it) and every packet until the returned stop,
// which then shuts the sockets down.
func takeGossip(s *gossipSockets) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case c := <-s.StreamCh():
				_ = c.Close()
			case <-s.PacketCh():
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		_ = s.Shutdown()
	}
}
