package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/vip/viptest"
	"halb/internal/witness"
	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var vipPrefix = netip.MustParsePrefix("10.99.0.160/24")

// node is one in-process daemon with its own fake interface.
type node struct {
	name    string
	link    *viptest.Link
	d       *Daemon
	task    *support.Task
	stopped bool
}

// freePort finds a port free for TCP and UDP on all the given addresses.
// The daemon's config has one gossip port for every node (cluster.port),
// so an in-process pair needs a port free on both addresses before either
// starts; port 0 cannot express that. Ports are taken below the ephemeral
// range so that other tests' outgoing connections cannot take them between
// the check and the daemon's bind. Frontends use port 0 where they can.
func freePort(t *testing.T, addrs ...string) int {
	t.Helper()
	for range 50 {
		// Below the ephemeral range (32768+), where outgoing connections of
		// tests running in parallel would take ports between check and use.
		port := 10000 + rand.IntN(22000)
		ok := true
		var closers []func() error
		for _, a := range addrs {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", a, port))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, l.Close)
			u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", a, port))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, u.Close)
		}
		for _, c := range closers {
			_ = c()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// pairConfig builds the config for two nodes a (priority 200) and b
// (100) in front of one echo server.
func pairConfig(t *testing.T, policy string) *config.Config {
	t.Helper()
	return pairConfigTo(t, policy, echoServer(t))
}

// pairConfigTo is pairConfig with the backend server at srv. Its health
// check tolerates a stall of the test process: both nodes live in it, so
// one stall longer than a check's timeout fails both nodes' checks at
// once, and the VIP then fails over for a reason no test here is about.
// Only three timeouts in a row, 1.5 s, mark the server down.
func pairConfigTo(t *testing.T, policy, srv string) *config.Config {
	t.Helper()
	gossip := freePort(t, "127.0.0.61", "127.0.0.62")
	doc := fmt.Sprintf(`
log: {connections: false}
frontends:
  - {name: api, bind: "127.0.0.1:1", backend: cp}
backends:
  - name: cp
    health: {type: tcp, interval: 500ms, timeout: 500ms, fall: 3, rise: 1}
    servers: [{name: cp1, address: "%s"}]
cluster:
  insecure_gossip: true
  port: %d
  policy: %s
  preempt_delay: 300ms
  join_timeout: 2s
  nodes:
    - {name: a, address: 127.0.0.61, priority: 200}
    - {name: b, address: 127.0.0.62, priority: 100}
vips:
  - {address: %s, interface: eth0, garp_interval: 10ms}
`, srv, gossip, policy, vipPrefix)
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startNode(t *testing.T, cfg *config.Config, name string) *node {
	t.Helper()
	return startNodeWith(t, cfg, name, nil)
}

func startNodeWith(t *testing.T, cfg *config.Config, name string, w witness.Prober) *node {
	t.Helper()
	c := *cfg
	// Both nodes live in one process, so each needs its own listener: port
	// 0, set after validation (which wants a real port), lets the kernel
	// pick one for each.
	c.Frontends = append([]config.Frontend(nil), cfg.Frontends...)
	c.Frontends[0].Bind = netip.AddrPortFrom(c.Frontends[0].Bind.Addr(), 0)
	dir, err := os.MkdirTemp("", "hd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c.Admin.Socket = filepath.Join(dir, name+".sock")
	c.Admin.StateFile = filepath.Join(dir, name+"-state.json")
	n := &node{name: name, link: viptest.NewLink()}
	tw := &testWriter{t: t, name: name}
	// Registered before the node's own cleanup, so it runs after it: a
	// straggling gossip goroutine must not log into a finished test.
	t.Cleanup(func() { tw.done.Store(true) })
	log := slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n.d, err = New(&c, Options{NodeName: name, Version: "test", Log: log, Link: n.link, GARP: viptest.NewGARP(), Witness: w})
	if err != nil {
		t.Fatal(err)
	}
	n.task = support.Go(t, n.d.Run)
	return n
}

// shutdown stops the node and waits for Run; it is idempotent.
func (n *node) shutdown(t *testing.T) {
	t.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	if err := n.task.Stop(t); err != nil {
		t.Errorf("node %s: Run: %v", n.name, err)
	}
}

func (n *node) holds() bool { return n.link.Has("eth0", vipPrefix) }

type testWriter struct {
	t    *testing.T
	name string
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Logf("[%s] %s", w.name, strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// neverBoth records whether both nodes ever held the VIP at once and
// whether neither did, sampling the fake links until stop is closed.
func watchGap(a, b *node, stop <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var longest time.Duration
		var gapStart time.Time
		for {
			held := a.holds() || b.holds()
			now := time.Now()
			switch {
			case !held && gapStart.IsZero():
				gapStart = now
			case held && !gapStart.IsZero():
				longest = max(longest, now.Sub(gapStart))
				gapStart = time.Time{}
			}
			select {
			case <-stop:
				out <- longest
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return out
}

// watchVerdicts polls both nodes' status verdicts until stop, and sends
// the VIP problems seen, each text once, in the order first seen.
func watchVerdicts(a, b *node, stop <-chan struct{}) <-chan []admin.Problem {
	out := make(chan []admin.Problem, 1)
	go func() {
		var seen []admin.Problem
		for {
			for _, n := range []*node{a, b} {
				for _, p := range admin.Assess(n.d.api.Snapshot()).Problems {
					if strings.HasPrefix(p.Text, "VIP ") && !slices.Contains(seen, p) {
						seen = append(seen, p)
					}
				}
			}
			select {
			case <-stop:
				out <- seen
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return out
}

func TestPairElectsHigherPriority(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	// Started together, both may claim for a gossip round before they see
	// each other's state; within a bound exactly a must hold it.
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a alone to hold the VIP")
	// b must stay standby: check over a few election rounds.
	support.Consistently(t, 5*reconcileEvery, func() bool { return !b.holds() },
		"b stays standby while a, with higher priority, holds the VIP")
	snap := b.d.api.Snapshot()
	if len(snap.VIPs) != 1 || snap.VIPs[0].Holder != "a" || snap.VIPs[0].HeldHere {
		t.Errorf("b's view of the VIP = %+v, want holder a, not held here", snap.VIPs)
	}
	if alive(b) != 2 {
		t.Errorf("b sees %d members alive, want 2", alive(b))
	}
}

func TestMaintenanceHandsOverMakeBeforeBreak(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	// The announced preemption is looked for from the moment leaving
	// maintenance returns (it writes the state file, slow under load)
	// until a takes the VIP back: a delay of seconds, not pairConfig's
	// 300 ms, keeps that window open on a loaded machine.
	cfg.Cluster.PreemptDelay = 2 * time.Second
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, a.holds, "a to hold the VIP")
	stop := make(chan struct{})
	gap := watchGap(a, b, stop)
	if err := a.d.api.SetMaintenance(true); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return b.holds() && !a.holds() }, "b to hold and a to release")
	close(stop)
	if g := <-gap; g > 0 {
		t.Errorf("the VIP was on neither node for %s during a planned handover", g)
	}
	// Leaving maintenance gives it back after preempt_delay, again without a gap.
	stop = make(chan struct{})
	gap = watchGap(a, b, stop)
	left := time.Now()
	if err := a.d.api.SetMaintenance(false); err != nil {
		t.Fatal(err)
	}
	// Before it preempts, a says when it will (status and the chaos run's
	// settle check rely on it).
	var pending admin.VIP
	var role admin.VIPRole
	support.WaitUntil(t, 5*time.Second, func() bool {
		s := a.d.api.Snapshot()
		if len(s.VIPs) == 1 && !s.VIPs[0].PreemptAt.IsZero() {
			pending, role = s.VIPs[0], s.Node.Roles[0]
		}
		return !pending.PreemptAt.IsZero() || a.holds()
	}, "a to announce its preemption")
	if pending.PreemptAt.IsZero() {
		t.Fatal("a took the VIP back without ever announcing the preemption")
	}
	if pending.PreemptAt.Before(left) || pending.PreemptAt.After(time.Now().Add(cfg.Cluster.PreemptDelay)) {
		t.Errorf("preempt at %s, want about preempt_delay after %s", pending.PreemptAt, left)
	}
	if !strings.Contains(role.Why, "takes it over in") {
		t.Errorf("a's role %+v does not say it will take the VIP over", role)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a to take the VIP back")
	close(stop)
	if g := <-gap; g > 0 {
		t.Errorf("the VIP was on neither node for %s during preemption", g)
	}
	for _, n := range []*node{a, b} {
		if at := n.d.api.Snapshot().VIPs[0].PreemptAt; !at.IsZero() {
			t.Errorf("%s still announces a preemption at %s after it happened", n.name, at)
		}
	}
}

func TestStickyKeepsHolder(t *testing.T) {
	cfg := pairConfig(t, "sticky")
	b := startNode(t, cfg, "b")
	// The join timeout (2 s) passes before b, alone, claims: leave room
	// for a slow start on a loaded machine.
	support.WaitUntil(t, 10*time.Second, b.holds, "b, alone, to hold the VIP")
	a := startNode(t, cfg, "a")
	support.WaitUntil(t, 5*time.Second, func() bool { return alive(a) == 2 }, "a to see b")
	support.Consistently(t, cfg.Cluster.PreemptDelay+5*reconcileEvery, func() bool {
		return !a.holds() && a.d.api.Snapshot().VIPs[0].PreemptAt.IsZero()
	}, "under the sticky policy, a neither takes the VIP from a healthy holder nor announces a preemption")
	if !b.holds() {
		t.Fatal("b lost the VIP")
	}
}

func TestGracefulStopHandsOver(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, a.holds, "a to hold the VIP")
	support.WaitUntil(t, 5*time.Second, func() bool { return alive(b) == 2 && alive(a) == 2 }, "b to see a")
	stop := make(chan struct{})
	gap := watchGap(a, b, stop)
	a.shutdown(t)
	support.WaitUntil(t, 5*time.Second, b.holds, "b to hold the VIP")
	close(stop)
	if g := <-gap; g > 0 {
		t.Errorf("the VIP was on neither node for %s during a graceful stop", g)
	}
	if a.holds() {
		t.Error("a still holds the VIP after stopping")
	}
}

// With every backend down nobody is eligible and the holder keeps the VIP
// (a VIP in front of unhealthy backends beats none). Stopping the holder
// must still hand the VIP over make-before-break, and without waiting out
// the handover timeout: the peer takes it because the stopping node drops
// it whatever it is elected for.
func TestGracefulStopWithBackendsDownHandsOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-accepting })
	cfg := pairConfigTo(t, "preempt", ln.Addr().String())
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a alone to hold the VIP")
	support.WaitUntil(t, 5*time.Second, func() bool { return alive(b) == 2 && alive(a) == 2 }, "a and b to see each other")
	stop := make(chan struct{})
	gap := watchGap(a, b, stop)
	_ = ln.Close() // checks are refused from now on: both nodes turn ineligible
	// The two turn ineligible a moment apart, each maybe seeing the other
	// still eligible: neither may drop the VIP on that view.
	support.WaitUntil(t, 10*time.Second, func() bool {
		return !eligibleIn(b, "a") && !eligibleIn(b, "b") && a.holds() && !b.holds()
	}, "b to see both nodes ineligible and a, the holder, to keep the VIP")
	began := time.Now()
	a.shutdown(t)
	took := time.Since(began)
	support.WaitUntil(t, 5*time.Second, b.holds, "b to hold the VIP")
	close(stop)
	if g := <-gap; g > 0 {
		t.Errorf("the VIP was on neither node for %s while the backends went down and a stopped", g)
	}
	if took >= handoverTimeout {
		t.Errorf("a's stop took %s: it waited out the handover timeout (%s) instead of handing over", took, handoverTimeout)
	}
}

// eligibleIn reports whether n sees member name as eligible.
func eligibleIn(n *node, name string) bool {
	for _, m := range n.d.ctl.cluster.Members() {
		if m.Name == name {
			return m.State.Eligible
		}
	}
	return false
}

func TestUnknownNodeIsRefused(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	_, err := New(cfg, Options{NodeName: "c", Link: viptest.NewLink(), GARP: viptest.NewGARP()})
	if err == nil || !strings.Contains(err.Error(), `node "c" is not in cluster.nodes (a, b)`) {
		t.Fatalf("New with unknown node: %v", err)
	}
}

func TestMissingKeyIsExplained(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.InsecureGossip = false
	cfg.Cluster.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	_, err := New(cfg, Options{NodeName: "a", Link: viptest.NewLink(), GARP: viptest.NewGARP()})
	if err == nil || !strings.Contains(err.Error(), "halb keygen") {
		t.Fatalf("New without key file: %v", err)
	}
}

// witnessProber answers for the witness while reachable is set.
type witnessProber struct{ reachable atomic.Bool }

func (w *witnessProber) Probe(ctx context.Context, _ netip.Addr) error {
	if w.reachable.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestWitnessUnreachableMakesIneligible(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.Witness = netip.MustParseAddr("127.0.0.1")
	wa, wb := &witnessProber{}, &witnessProber{}
	wa.reachable.Store(true)
	wb.reachable.Store(true)
	a := startNodeWith(t, cfg, "a", wa)
	b := startNodeWith(t, cfg, "b", wb)
	support.WaitUntil(t, 5*time.Second, a.holds, "a to hold the VIP")
	// a loses sight of the witness: it is probably the one cut off, so b
	// takes over although a has the higher priority.
	wa.reachable.Store(false)
	support.WaitUntil(t, 10*time.Second, func() bool { return b.holds() && !a.holds() }, "b to take the VIP from a that lost the witness")
	if snap := a.d.api.Snapshot(); snap.Members[0].Eligible {
		t.Errorf("a still gossips itself eligible without its witness: %+v", snap.Members[0])
	}
}

func TestCutOffNodeWithoutWitnessHoldsNothing(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.Witness = netip.MustParseAddr("127.0.0.1")
	cfg.Cluster.JoinTimeout = 200 * time.Millisecond
	w := &witnessProber{}
	a := startNodeWith(t, cfg, "a", w)
	// Alone and unable to reach the witness, a must stay empty-handed for
	// several rounds after its join timeout.
	support.Consistently(t, cfg.Cluster.JoinTimeout+2*time.Second, func() bool { return !a.holds() },
		"a node cut off from its peer and its witness stays without the VIP")
	w.reachable.Store(true)
	support.WaitUntil(t, 5*time.Second, a.holds, "a to take the VIP once the witness answers")
}

func TestSnapshotShowsAbsentNode(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.JoinTimeout = 100 * time.Millisecond
	a := startNode(t, cfg, "a")
	support.WaitUntil(t, 5*time.Second, a.holds, "a, alone, to hold the VIP")
	snap := a.d.api.Snapshot()
	var names []string
	for _, m := range snap.Members {
		names = append(names, fmt.Sprintf("%s:%v", m.Name, m.Alive))
	}
	if got, want := strings.Join(names, " "), "a:true b:false"; got != want {
		t.Errorf("members = %s, want %s (the configured node b shown as not alive)", got, want)
	}
}

// awaitDrillable waits until both holder and standby see the standby
// alive and eligible: its first health check may still be under way when
// it already knows the holder, and a drill with nowhere to go is refused.
func awaitDrillable(t *testing.T, holder, standby *node) {
	t.Helper()
	eligible := func(n *node) bool {
		for _, m := range n.d.api.Snapshot().Members {
			if m.Name == standby.name {
				return m.Alive && m.Eligible
			}
		}
		return false
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return eligible(holder) && eligible(standby) },
		standby.name+" to be eligible in both nodes' views")
}

// alive counts the members n sees alive.
func alive(n *node) int {
	c := 0
	for _, m := range n.d.api.Snapshot().Members {
		if m.Alive {
			c++
		}
	}
	return c
}

func TestPlannedDrillMovesMakeBeforeBreak(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a alone to hold the VIP")
	support.WaitUntil(t, 5*time.Second, func() bool { return b.d.api.Snapshot().VIPs[0].Holder == "a" }, "b to know a holds it")
	awaitDrillable(t, a, b)
	support.WaitUntil(t, 5*time.Second, func() bool {
		return admin.Assess(a.d.api.Snapshot()).Verdict == admin.LevelOK && admin.Assess(b.d.api.Snapshot()).Verdict == admin.LevelOK
	}, "both nodes' status to be OK")
	stop := make(chan struct{})
	gap := watchGap(a, b, stop)
	verdicts := watchVerdicts(a, b, stop)
	// Asked on the standby: the request travels to the holder over gossip.
	start, err := b.d.api.StartDrill(admin.DrillRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if start.From != "a" || start.To != "b" || start.Hard {
		t.Errorf("drill = %+v, want a -> b, planned", start)
	}
	if _, err := b.d.api.StartDrill(admin.DrillRequest{}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second drill: %v, want refused as already running", err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return b.holds() && !a.holds() }, "b to hold and a to release")
	close(stop)
	if g := <-gap; g > 0 {
		t.Errorf("the VIP was on neither node for %s during a planned drill", g)
	}
	// Both hold it for a moment (the yielding holder lets go as soon as
	// it sees b hold): halb status calls that a handover, never split
	// brain.
	handing := false
	for _, p := range <-verdicts {
		if p.Level == admin.LevelFail {
			t.Errorf("status during the drill: %s %s", p.Level, p.Text)
		}
		handing = handing || strings.Contains(p.Text, "handing over from a to b")
	}
	if !handing {
		t.Error("no status during the drill showed the make-before-break overlap as a handover")
	}
	if err := b.d.api.EndDrill(); err != nil {
		t.Fatal(err)
	}
	// With preempt, a takes it back once stable again, again without a gap.
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a to take the VIP back")
}

func TestHardDrillSilencesHolder(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && !b.holds() }, "a alone to hold the VIP")
	support.WaitUntil(t, 5*time.Second, func() bool { return b.d.api.Snapshot().VIPs[0].Holder == "a" }, "b to know a holds it")
	awaitDrillable(t, a, b)
	if _, err := b.d.api.StartDrill(admin.DrillRequest{Hard: true, Hold: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, b.holds, "b to hold after a went silent")
	support.WaitUntil(t, 5*time.Second, func() bool { return alive(b) == 1 }, "b to see a gone")
	// a is left as kill -9 leaves a node: the VIP still on its interface
	// (unannounced) and its ports closed, so clients still sent there
	// are reset at once rather than left to time out.
	if !a.holds() {
		t.Error("a removed the VIP while playing dead; a killed process leaves it")
	}
	// The frontend binds port 0 in these tests: the kernel's pick is the
	// gate's address, which the drill opens again.
	_, fronts := a.d.srv.parts()
	g := fronts[0].gate.Load()
	if g == nil {
		t.Fatal("a's frontend has no gate listener to close")
	}
	port := int(g.bind.Port())
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		_ = c.Close()
		t.Error("a's frontend accepted a connection while a played dead")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to a's frontend while it played dead: %v, want refused", err)
	}
	// The silence is bounded: a comes back, and under preempt takes over.
	support.WaitUntil(t, 15*time.Second, func() bool { return alive(b) == 2 && a.holds() && !b.holds() }, "a back and holding")
	if !serves(port) {
		t.Error("a's frontend does not serve after the drill")
	}
}

func TestDrillRefusedWithoutEligiblePeer(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.JoinTimeout = 100 * time.Millisecond
	a := startNode(t, cfg, "a")
	// The address on the link comes before the round records a as the
	// holder, and a drill with no holder is refused for that instead.
	support.WaitUntil(t, 5*time.Second, func() bool { return a.holds() && a.d.api.Snapshot().VIPs[0].Holder == "a" }, "a to hold the VIP")
	_, err := a.d.api.StartDrill(admin.DrillRequest{})
	if err == nil || !strings.Contains(err.Error(), "no node other than the holder a is eligible") {
		t.Fatalf("drill with no peer: %v", err)
	}
}

func TestFrontendRate(t *testing.T) {
	d := &operatorAPI{rates: map[string]rateSample{}}
	t0 := time.Unix(1000, 0)
	if got := d.rate("api", 20, t0.Add(10*time.Second), t0); got != 2 {
		t.Errorf("first look: %v/s, want the average since start, 2", got)
	}
	if got := d.rate("api", 30, t0.Add(10500*time.Millisecond), t0); got != 2 {
		t.Errorf("a look 0.5 s later: %v/s, want the previous rate kept, 2", got)
	}
	if got := d.rate("api", 40, t0.Add(12*time.Second), t0); got != 10 {
		t.Errorf("2 s later, 20 more: %v/s, want 10", got)
	}
}
