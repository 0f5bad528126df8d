package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/pool"
	"halb/test/support"
)

// A pool added while the election loop runs (a reload) wakes it on a
// change like the pools it started with.
func TestPoolWatchForwardsAddedPools(t *testing.T) {
	newPool := func(name string) (*pool.Pool, *pool.Server) {
		p := pool.New(config.Backend{Name: name, Health: config.HealthCheck{Rise: 1, Fall: 1},
			Servers: []config.Server{{Name: "s", Address: netip.MustParseAddrPort("127.0.0.1:1"), Weight: 1}}}, slog.New(slog.DiscardHandler))
		return p, p.Servers()[0]
	}
	pokes := make(chan struct{}, 16)
	var w poolWatch
	w.add(&pool.Pool{}) // before start: ignored, no goroutine
	ctx, cancel := context.WithCancel(context.Background())
	w.start(ctx, func() { pokes <- struct{}{} })
	defer func() { cancel(); w.wait() }()

	p, s := newPool("added")
	w.add(p)
	w.add(p) // once is enough
	s.ReportCheck(health.Result{OK: true, Reason: "test"})
	select {
	case <-pokes:
	case <-time.After(5 * time.Second):
		t.Fatal("a change in a pool added while running did not wake the election loop")
	}

}

// The systemd watchdog is fed only while the election loop finishes
// rounds: a loop stuck in a round must get the node restarted, where
// taking and releasing a lock alone would have kept it fed.
func TestWatchdogFollowsElectionProgress(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.JoinTimeout = 100 * time.Millisecond
	a := startNode(t, cfg, "a")
	support.WaitUntil(t, 5*time.Second, a.holds, "a, alone, to hold the VIP")
	if !a.d.alive() {
		t.Fatal("the watchdog is not fed while the election loop runs")
	}
	// As if the loop had been stuck for longer than allowed: its rounds
	// every reconcileEvery would have moved lastRun on, so stop it first.
	a.shutdown(t)
	a.d.ctl.lastRun.Store(time.Now().Add(-stalledAfter - time.Millisecond).UnixNano())
	if a.d.alive() {
		t.Fatalf("the watchdog is fed although no election round finished for %s", stalledAfter)
	}
}
