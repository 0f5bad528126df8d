package cluster

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/test/support"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

// freePort finds a port free for both TCP and UDP on addr, for the few tests
// that must know a node's address before it starts: a peer that never
// runs, or a node restarted on the address it had. Everything else starts
// nodes on port 0 and reads the address back with bound, which cannot race
// with other tests taking the port between the pick and the bind.
func freePort(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	for range 20 {
		ln := support.Listen(t, net.JoinHostPort(addr, "0"))
		ap := support.AddrPort(t, ln.Addr())
		pc, err := net.ListenPacket("udp", ap.String())
		_ = ln.Close()
		if err != nil {
			continue
		}
		_ = pc.Close()
		return ap
	}
	t.Fatalf("no port free for both tcp and udp on %s", addr)
	return netip.AddrPort{}
}

// anyPort is ip with port 0: the node binds whatever port the kernel gives.
func anyPort(ip string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(ip), 0) }

// bound returns the address n gossips on once Run has bound it and its
// memberlist runs, so a peer started with that address finds it running.
func bound(t *testing.T, n *node) netip.AddrPort {
	t.Helper()
	support.WaitUntil(t, 5*time.Second, func() bool { return n.c.ml.Load() != nil }, n.c.cfg.NodeName+" runs gossip")
	return n.c.localAddr()
}

type node struct {
	c       *Cluster
	rec     *support.Log
	task    *support.Task
	stopped bool
}

// start runs a node until stop or the end of the test.
func start(t *testing.T, cfg Config) *node {
	t.Helper()
	rec := support.NewLog()
	c, err := New(cfg, rec.Logger())
	if err != nil {
		t.Fatalf("new %s: %v", cfg.NodeName, err)
	}
	return run(t, c, rec)
}

// run runs c, built with a logger writing to rec, until stop or the end of
// the test.
func run(t *testing.T, c *Cluster, rec *support.Log) *node {
	t.Helper()
	return &node{c: c, rec: rec, task: support.Go(t, c.Run)}
}

// stop cancels the node and waits for Run to return; it is idempotent.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	if err := n.task.Stop(t); err != nil {
		t.Errorf("run %s: %v", n.c.cfg.NodeName, err)
	}
}

func names(ms []Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func member(c *Cluster, name string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// waitFor waits until cond holds, re-checking on every Changed signal and at
// least every 20ms, and returns how long it took.
func waitFor(t *testing.T, c *Cluster, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-c.Changed():
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not within %s (members of %s: %v)", what, within, c.cfg.NodeName, names(c.Members()))
		}
	}
	return time.Since(begin)
}

func waitReady(t *testing.T, n *node, within time.Duration) {
	t.Helper()
	select {
	case <-n.c.Ready():
	case <-time.After(within):
		t.Fatalf("%s not ready within %s", n.c.cfg.NodeName, within)
	}
}

func nodeConfig(name string, self netip.AddrPort, peers ...netip.AddrPort) Config {
	return Config{
		NodeName:    name,
		BindAddr:    self.Addr(),
		Port:        int(self.Port()),
		Peers:       peers,
		Key:         testKey,
		JoinTimeout: 3 * time.Second,
	}
}

// pair starts two nodes that list each other and waits until each sees both.
func pair(t *testing.T, ipA, ipB string) (a, b *node, addrA, addrB netip.AddrPort) {
	t.Helper()
	a = start(t, nodeConfig("lb1", anyPort(ipA)))
	addrA = bound(t, a)
	b = start(t, nodeConfig("lb2", anyPort(ipB), addrA))
	addrB = bound(t, b)
	a.c.SetPeers([]netip.AddrPort{addrB}) // so lb1 re-joins lb2 as a configured peer
	for _, n := range []*node{a, b} {
		waitReady(t, n, 5*time.Second)
		waitFor(t, n.c, 5*time.Second, "both members seen", func() bool { return len(n.c.Members()) == 2 })
	}
	return a, b, addrA, addrB
}

func TestStatePropagatesAndStoppedNodeLeaves(t *testing.T) {
	a, b, addrA, _ := pair(t, "127.0.0.11", "127.0.0.12")

	want := seedState()
	a.c.SetLocal(want)
	took := waitFor(t, b.c, 2*time.Second, "lb2 sees lb1's state", func() bool {
		m, ok := member(b.c, "lb1")
		return ok && cmp.Equal(want, m.State, cmpopts.EquateEmpty())
	})
	t.Logf("state propagated in %s", took)

	m, _ := member(b.c, "lb1")
	if diff := cmp.Diff(Member{Name: "lb1", Addr: addrA, Alive: true, State: want}, m,
		cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.AddrPort{}), cmpopts.IgnoreFields(Member{}, "LastHeard", "Since", "Watched")); diff != "" {
		t.Fatalf("lb1 as seen by lb2 (-want +got):\n%s", diff)
	}
	if time.Since(m.LastHeard) > 2*time.Second {
		t.Fatalf("lb1 last heard %s ago", time.Since(m.LastHeard))
	}
	local := b.c.Members()
	if got := names(local); !cmp.Equal(got, []string{"lb1", "lb2"}) {
		t.Fatalf("members = %v, want sorted [lb1 lb2]", got)
	}
	if !local[1].Local || local[0].Local {
		t.Fatalf("local flags wrong: %+v", local)
	}

	// A second change reaches the peer too (metadata updates, not just join).
	want.Holds, want.Eligible = nil, false
	a.c.SetLocal(want)
	waitFor(t, b.c, 2*time.Second, "lb2 sees lb1's second state", func() bool {
		m, ok := member(b.c, "lb1")
		return ok && cmp.Equal(want, m.State, cmpopts.EquateEmpty())
	})

	a.stop(t)
	took = waitFor(t, b.c, 2*time.Second, "stopped lb1 leaves lb2's members", func() bool {
		_, ok := member(b.c, "lb1")
		return !ok
	})
	t.Logf("stopped node gone after %s", took)
}

func TestWrongKeyDoesNotJoin(t *testing.T) {
	a := start(t, nodeConfig("lb1", anyPort("127.0.0.13")))
	addrA := bound(t, a)
	cfgB := nodeConfig("lb2", anyPort("127.0.0.14"), addrA)
	cfgB.Key = otherKey
	cfgB.JoinTimeout = 300 * time.Millisecond
	b := start(t, cfgB)

	// Wait for a few attempts of the rejoin loop: the first logs at Warn, the
	// repeats at Debug.
	waitFor(t, b.c, 5*time.Second, "join failures logged", func() bool {
		return b.rec.Count(slog.LevelDebug, "join peer failed") >= 3
	})
	if got := b.rec.Count(slog.LevelWarn, "join peer failed", "peer="+addrA.String(), "no installed keys could decrypt"); got != 1 {
		t.Fatalf("want exactly one Warn naming the peer and the key mismatch for a peer that keeps failing the same way, got %d", got)
	}
	waitReady(t, b, time.Second) // alone after the join timeout
	for _, n := range []*node{a, b} {
		if got := names(n.c.Members()); len(got) != 1 {
			t.Fatalf("%s members = %v, want only itself", n.c.cfg.NodeName, got)
		}
	}
	// lb1 answered, so lb2 must know it is not alone, only cut off by its key.
	if inc := b.c.Incompatible(); len(inc) != 1 || !strings.Contains(inc[addrA], "decrypt") {
		t.Fatalf("Incompatible() = %v, want lb1's address with the decrypt error", inc)
	}
}

func TestAbsentPeerIsNotIncompatible(t *testing.T) {
	self, missing := freePort(t, "127.0.0.19"), freePort(t, "127.0.0.20")
	cfg := nodeConfig("lb1", self, missing)
	n := start(t, cfg)
	waitFor(t, n.c, 5*time.Second, "join failures logged", func() bool {
		return n.rec.Count(slog.LevelWarn, "join peer failed") >= 1
	})
	if inc := n.c.Incompatible(); len(inc) != 0 {
		t.Fatalf("Incompatible() = %v for a peer nobody answers at", inc)
	}
}

func TestInsecureNodeDoesNotJoinEncrypted(t *testing.T) {
	a := start(t, nodeConfig("lb1", anyPort("127.0.0.15")))
	cfgB := nodeConfig("lb2", anyPort("127.0.0.16"), bound(t, a))
	cfgB.Key, cfgB.Insecure = nil, true
	b := start(t, cfgB)
	waitFor(t, b.c, 5*time.Second, "join failures logged", func() bool {
		return b.rec.Count(slog.LevelDebug, "join peer failed") >= 2
	})
	for _, n := range []*node{a, b} {
		if got := names(n.c.Members()); len(got) != 1 {
			t.Fatalf("%s members = %v, want only itself", n.c.cfg.NodeName, got)
		}
	}
}

func TestReady(t *testing.T) {
	t.Run("alone after join timeout", func(t *testing.T) {
		self, missing := freePort(t, "127.0.0.17"), freePort(t, "127.0.0.18")
		cfg := nodeConfig("lb1", self, missing)
		cfg.JoinTimeout = 500 * time.Millisecond
		begin := time.Now()
		n := start(t, cfg)
		waitReady(t, n, 3*time.Second)
		if took := time.Since(begin); took < cfg.JoinTimeout {
			t.Fatalf("ready after %s, before the join timeout %s", took, cfg.JoinTimeout)
		}
		if n.rec.Count(slog.LevelInfo, "no peer answered within the join timeout") != 1 {
			t.Fatal("join timeout not logged")
		}
	})
	t.Run("no peers: at once", func(t *testing.T) {
		cfg := nodeConfig("lb1", freePort(t, "127.0.0.17"))
		cfg.JoinTimeout = time.Minute
		waitReady(t, start(t, cfg), 2*time.Second)
	})
	t.Run("on join, before the timeout", func(t *testing.T) {
		addrA, addrB := freePort(t, "127.0.0.17"), freePort(t, "127.0.0.18")
		a := start(t, nodeConfig("lb1", addrA))
		cfgB := nodeConfig("lb2", addrB, addrA)
		cfgB.JoinTimeout = time.Minute
		b := start(t, cfgB)
		waitReady(t, b, 5*time.Second)
		waitFor(t, a.c, 2*time.Second, "lb1 sees lb2", func() bool { return len(a.c.Members()) == 2 })
	})
}

// A node that comes back (restart, or the other half of a healed partition)
// is joined again by its peers' rejoin loop: the restarted node here lists no
// peers, so only lb2's loop can bring them together.
func TestRestartedPeerIsRejoined(t *testing.T) {
	a, b, addrA, _ := pair(t, "127.0.0.19", "127.0.0.20")
	a.stop(t)
	waitFor(t, b.c, 3*time.Second, "lb1 gone", func() bool { return len(b.c.Members()) == 1 })

	a2 := start(t, nodeConfig("lb1", addrA)) // same name and address, no peers
	took := waitFor(t, b.c, 5*time.Second, "lb1 rejoined by lb2", func() bool {
		_, ok := member(b.c, "lb1")
		return ok
	})
	t.Logf("rejoined after %s", took)
	waitFor(t, a2.c, 2*time.Second, "restarted lb1 sees lb2", func() bool {
		_, ok := member(a2.c, "lb2")
		return ok
	})
}

func TestSilenceLooksLikeACrash(t *testing.T) {
	a, b, _, _ := pair(t, "127.0.0.21", "127.0.0.22")
	a.c.SetLocal(State{Priority: 200, Holds: []string{"192.168.66.160"}})
	waitFor(t, b.c, 2*time.Second, "state seen", func() bool {
		m, ok := member(b.c, "lb1")
		return ok && m.State.Priority == 200
	})

	const silence = 2500 * time.Millisecond
	a.c.Silence(silence)
	took := waitFor(t, b.c, 3*time.Second, "silenced lb1 declared dead", func() bool {
		_, ok := member(b.c, "lb1")
		return !ok
	})
	t.Logf("silenced node declared dead after %s", took)
	waitFor(t, a.c, 3*time.Second, "silenced lb1 loses lb2", func() bool {
		_, ok := member(a.c, "lb2")
		return !ok
	})

	took = waitFor(t, b.c, silence+5*time.Second, "lb1 back after the silence", func() bool {
		m, ok := member(b.c, "lb1")
		return ok && m.State.Priority == 200
	})
	t.Logf("back %s after being declared dead", took)
	waitFor(t, a.c, 3*time.Second, "lb1 sees lb2 again", func() bool {
		_, ok := member(a.c, "lb2")
		return ok
	})
}

func TestDuplicateNameIsLogged(t *testing.T) {
	a := start(t, nodeConfig("lb1", anyPort("127.0.0.23")))
	b := start(t, nodeConfig("lb1", anyPort("127.0.0.24"), bound(t, a)))
	waitFor(t, a.c, 5*time.Second, "name conflict logged", func() bool {
		return a.rec.Count(slog.LevelWarn, "two nodes claim the same name", "peer=lb1") > 0
	})
	// Neither node lists the impostor as a second member.
	for _, n := range []*node{a, b} {
		if got := names(n.c.Members()); !cmp.Equal(got, []string{"lb1"}) {
			t.Fatalf("members = %v, want [lb1]", got)
		}
	}
}

func TestSendReachesPeer(t *testing.T) {
	// lb1 runs before lb2 is started with its address, and both are on
	// ports the kernel gave them: "gossip is not running" (a flake seen
	// under load, issue 14) came from lb2 joining while lb1's memberlist
	// was still being created, on ports picked before they were bound.
	a, b, _, _ := pair(t, "127.0.0.21", "127.0.0.22")
	if err := a.c.Send("lb2", []byte(`{"op":"yield"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-b.c.Messages():
		if string(m) != `{"op":"yield"}` {
			t.Errorf("lb2 got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lb2 never got the message")
	}
	if err := a.c.Send("lb9", nil); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("send to a stranger: %v", err)
	}
}
