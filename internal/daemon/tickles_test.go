package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/proxy"
	"halb/internal/tickle"
)

// fakeNet connects tickles of several nodes in one test: SendConns
// delivers to the named node's queue, as the cluster's transport does.
type fakeNet struct {
	self string
	all  *fakeNets
	in   chan cluster.ConnsMsg
}

// fakeNets are the members of a fake cluster, by name.
type fakeNets struct {
	mu    sync.Mutex
	nodes map[string]*fakeNet
}

func newFakeNets(names ...string) *fakeNets {
	all := &fakeNets{nodes: map[string]*fakeNet{}}
	for _, n := range names {
		all.add(n)
	}
	return all
}

func (all *fakeNets) add(name string) *fakeNet {
	all.mu.Lock()
	defer all.mu.Unlock()
	n := &fakeNet{self: name, all: all, in: make(chan cluster.ConnsMsg, 64)}
	all.nodes[name] = n
	return n
}

func (all *fakeNets) get(name string) *fakeNet {
	all.mu.Lock()
	defer all.mu.Unlock()
	return all.nodes[name]
}

// kill makes a node vanish from the cluster.
func (all *fakeNets) kill(name string) {
	all.mu.Lock()
	defer all.mu.Unlock()
	delete(all.nodes, name)
}

func (f *fakeNet) SendConns(node string, m cluster.ConnsMsg) error {
	to := f.all.get(node)
	if to == nil {
		return errors.New("not a member")
	}
	m.From = f.self
	m.Payload = slices.Clone(m.Payload)
	select {
	case to.in <- m:
	default:
		return errors.New("queue full")
	}
	return nil
}

func (f *fakeNet) ConnsMessages() <-chan cluster.ConnsMsg { return f.in }

func (f *fakeNet) Members() []cluster.Member {
	f.all.mu.Lock()
	defer f.all.mu.Unlock()
	var ms []cluster.Member
	for n := range f.all.nodes {
		ms = append(ms, cluster.Member{Name: n, Alive: true, Local: n == f.self})
	}
	return ms
}

// fakeWriter records the tickles instead of sending them.
type fakeWriter struct {
	mu     sync.Mutex
	ifname string
	pkts   map[netip.Addr]int // client address -> tickles written to it
	closed bool
}

func (w *fakeWriter) WritePacket(_ []byte, dst netip.Addr) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pkts[dst]++
	return nil
}

func (w *fakeWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

// fakeSessions stands in for the proxy's session list.
type fakeSessions struct {
	mu      sync.Mutex
	pairs   []proxy.ClientPair
	version uint64
	listed  int // calls of clients
}

func (s *fakeSessions) set(pairs ...proxy.ClientPair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pairs = pairs
	s.version++
}

func (s *fakeSessions) clients(dst []proxy.ClientPair) []proxy.ClientPair {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listed++
	return append(dst, s.pairs...)
}

func (s *fakeSessions) clientsVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

func (s *fakeSessions) closeSessions(pairs map[proxy.ClientPair]struct{}, _ time.Time, _ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept, n := s.pairs[:0], 0
	for _, p := range s.pairs {
		if _, hit := pairs[p]; hit {
			n++
			continue
		}
		kept = append(kept, p)
	}
	s.pairs = kept
	if n > 0 {
		s.version++
	}
	return n
}

func (s *fakeSessions) open() []proxy.ClientPair {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pairs)
}

func (s *fakeSessions) listings() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listed
}

// tickleNode is one node's tickles with fakes around it.
type tickleNode struct {
	t        *tickles
	sessions *fakeSessions
	mu       sync.Mutex
	writers  []*fakeWriter
}

func (n *tickleNode) opened() []*fakeWriter {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.writers)
}

var tickleVIP = netip.MustParseAddr("10.0.0.5")

func newTickleNode(name string, net *fakeNet, vips []config.VIP) *tickleNode {
	n := &tickleNode{sessions: &fakeSessions{}}
	open := func(ifname string, ipv6 bool) (TickleWriter, error) {
		w := &fakeWriter{ifname: ifname, pkts: map[netip.Addr]int{}}
		n.mu.Lock()
		n.writers = append(n.writers, w)
		n.mu.Unlock()
		return w, nil
	}
	ifnames := make([]string, len(vips))
	for i := range vips {
		ifnames[i] = "eth0"
	}
	n.t = newTickles(name, net, vips, ifnames, n.sessions, open, slog.New(slog.DiscardHandler))
	n.t.listen = func(ifname string, vip netip.Addr, targets []tickle.Target) (answerCounter, error) {
		return fakeCounter{answers: tickle.Answers{Acknowledged: len(targets) - 1, Closed: 1}}, nil
	}
	return n
}

// fakeCounter answers, once the count ends, that all but one tickled
// client acknowledged and one had closed already. Of the repeats, the
// client 10.0.0.21:40001 has answered with an ACK (settled but for the
// last round) and 10.0.0.22:40003 with a reset (settled).
type fakeCounter struct{ answers tickle.Answers }

func (c fakeCounter) Count(ctx context.Context) (tickle.Answers, error) {
	<-ctx.Done()
	return c.answers, nil
}

// Acked knows no acknowledgement numbers: no resets are written.
func (c fakeCounter) Acked(tickle.Target) (uint32, bool) { return 0, false }

func (c fakeCounter) Closed() []tickle.Target {
	return []tickle.Target{{VIP: netip.MustParseAddrPort("10.0.0.5:6443"), Client: netip.MustParseAddrPort("10.0.0.22:40003")}}
}

func (c fakeCounter) Settled(t tickle.Target, last bool) bool {
	switch t.Client {
	case netip.MustParseAddrPort("10.0.0.21:40001"):
		return !last
	case netip.MustParseAddrPort("10.0.0.22:40003"):
		return true
	}
	return false
}

func tickleVIPConfig(on bool) config.VIP {
	return config.VIP{Address: netip.PrefixFrom(tickleVIP, 32), Interface: "eth0", Announce: config.AnnounceARP,
		Tickle: on, TickleRate: config.DefaultTickleRate}
}

func pair(local, client string) proxy.ClientPair {
	return proxy.ClientPair{Local: netip.MustParseAddrPort(local), Client: netip.MustParseAddrPort(client)}
}

// The holder shares its sessions through the VIP; when it is gone and
// the standby takes the VIP, the standby tickles each of them on the
// VIP's interface, and no other address: in every round until its client
// has answered.
func TestTakeoverTicklesPreviousHoldersConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nets := newFakeNets("lb1", "lb2")
		a := newTickleNode("lb1", nets.get("lb1"), []config.VIP{tickleVIPConfig(true)})
		b := newTickleNode("lb2", nets.get("lb2"), []config.VIP{tickleVIPConfig(true)})
		a.sessions.set(
			pair("10.0.0.5:6443", "10.0.0.21:40001"),
			pair("10.0.0.5:50000", "10.0.0.21:40002"),
			pair("10.0.0.5:6443", "10.0.0.22:40003"),
			pair("10.0.0.9:6443", "10.0.0.23:40004"), // the node's own address, not the VIP
		)
		ctx, cancel := context.WithCancel(t.Context())
		aCtx, killA := context.WithCancel(ctx)
		var wg, aDone sync.WaitGroup
		aDone.Go(func() { _ = a.t.run(aCtx) })
		wg.Go(func() { _ = b.t.run(ctx) })

		a.t.observe(tickleVIP, true)
		time.Sleep(3 * shareEvery)
		synctest.Wait()
		if got := b.t.status(tickleVIP).Table; got != 3 {
			t.Fatalf("the standby's copy of the holder's table has %d connections, want 3", got)
		}
		if got := a.t.status(tickleVIP).Table; got != 3 {
			t.Fatalf("the holder's table has %d connections, want 3", got)
		}

		// lb1 dies: its tables stay on lb2, which takes the VIP.
		killA()
		aDone.Wait()
		nets.kill("lb1")
		b.t.observe(tickleVIP, true)
		time.Sleep(time.Second) // past the last of tickle.DefaultRounds
		synctest.Wait()

		ws := b.opened()
		if len(ws) != 1 {
			t.Fatalf("opened %d raw sockets, want 1", len(ws))
		}
		w := ws[0]
		w.mu.Lock()
		got, closed := w.pkts, w.closed
		w.mu.Unlock()
		// Every round for 10.0.0.21:40002; the first and the last for
		// 40001 (acknowledged: the last covers a lost reset); only the
		// first for 10.0.0.22:40003 (its client had closed).
		rounds := len(tickle.DefaultRounds)
		want := map[netip.Addr]int{
			netip.MustParseAddr("10.0.0.21"): rounds + 2,
			netip.MustParseAddr("10.0.0.22"): 1,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tickles by client (-want +got):\n%s", diff)
		}
		if !closed || w.ifname != "eth0" {
			t.Errorf("socket on %q closed %v, want eth0 closed after sending", w.ifname, closed)
		}
		st := b.t.status(tickleVIP)
		if st.LastTickled != 3 || st.LastMove.IsZero() {
			t.Errorf("status = %+v, want 3 tickled at a takeover time", st)
		}
		if want := (tickle.Answers{Acknowledged: 2, Closed: 1}); !st.Counted || st.Answers != want {
			t.Errorf("status answers %+v (counted %v), want %+v", st.Answers, st.Counted, want)
		}
		if st.Clients != 2 || st.Reconnected != 0 {
			t.Errorf("status: %d of %d clients reconnected before any did, want 0 of 2", st.Reconnected, st.Clients)
		}
		// The clients reconnect, from new ports, one after the other; the
		// status says how long until the last was back.
		b.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:41000"))
		time.Sleep(shareEvery)
		synctest.Wait()
		if st := b.t.status(tickleVIP); st.Reconnected != 1 {
			t.Errorf("%d of %d clients reconnected, want 1", st.Reconnected, st.Clients)
		}
		time.Sleep(2 * time.Second)
		b.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:41000"), pair("10.0.0.5:6443", "10.0.0.22:41001"))
		time.Sleep(shareEvery)
		synctest.Wait()
		st = b.t.status(tickleVIP)
		if st.Reconnected != 2 || st.ReconnectedWithin < 3*time.Second || st.ReconnectedWithin > 3400*time.Millisecond {
			t.Errorf("%d of %d clients reconnected within %s, want 2 within 3s..3.4s of the move", st.Reconnected, st.Clients, st.ReconnectedWithin)
		}
		// The replica is forgotten once tickled: a later takeover does
		// not reset those clients again.
		if n := len(b.t.store.Stats()); n != 0 {
			t.Errorf("%d replicas kept after the tickles, want 0", n)
		}
		cancel()
		wg.Wait()
	})
}

// A holder that another node's takeover left with orphaned sessions (it
// was cut off, the other held the VIP and reset the clients, then let
// go) tickles its own sessions through the VIP, from its own table; a
// node that does not hold the VIP, or whose tickles are off, does not.
func TestTickleOwnAfterRegainingTheVIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nets := newFakeNets("lb1", "lb2")
		a := newTickleNode("lb1", nets.get("lb1"), []config.VIP{tickleVIPConfig(true)})
		off := newTickleNode("lb2", nets.get("lb2"), []config.VIP{tickleVIPConfig(false)})
		a.sessions.set(
			pair("10.0.0.5:6443", "10.0.0.21:40001"),
			pair("10.0.0.5:6443", "10.0.0.22:40003"),
			pair("10.0.0.9:6443", "10.0.0.23:40004"), // another address: not the VIP's
		)
		off.sessions.set(pair("10.0.0.5:6443", "10.0.0.24:40005"))
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = a.t.run(ctx) })
		wg.Go(func() { _ = off.t.run(ctx) })
		if n := a.t.tickleOwn(tickleVIP); n != 0 {
			t.Fatalf("tickled %d sessions of a VIP not held here, want 0", n)
		}
		a.t.observe(tickleVIP, true)
		off.t.observe(tickleVIP, true)
		time.Sleep(3 * shareEvery) // synced own tables
		synctest.Wait()
		if n := off.t.tickleOwn(tickleVIP); n != 0 {
			t.Errorf("tickles off, yet %d sessions queued", n)
		}
		if n := a.t.tickleOwn(tickleVIP); n != 2 {
			t.Fatalf("queued %d of the node's own sessions through the VIP, want 2", n)
		}
		time.Sleep(time.Second) // past the last round
		synctest.Wait()
		ws := a.opened()
		if len(ws) != 1 {
			t.Fatalf("opened %d raw sockets, want 1", len(ws))
		}
		ws[0].mu.Lock()
		got := ws[0].pkts
		ws[0].mu.Unlock()
		// fakeCounter settles 10.0.0.21:40001 (ACK: first and last
		// rounds) and 10.0.0.22:40003 (reset: first round only).
		want := map[netip.Addr]int{netip.MustParseAddr("10.0.0.21"): 2, netip.MustParseAddr("10.0.0.22"): 1}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tickles by client (-want +got):\n%s", diff)
		}
		if len(off.opened()) != 0 {
			t.Error("a node with tickles off opened a raw socket")
		}
		// The client that answered with a reset has no connection: its
		// orphaned session is closed; the others stay.
		want2 := []proxy.ClientPair{pair("10.0.0.5:6443", "10.0.0.21:40001"), pair("10.0.0.9:6443", "10.0.0.23:40004")}
		if got := a.sessions.open(); !slices.Equal(got, want2) {
			t.Errorf("sessions after the own tickle: %v, want %v", got, want2)
		}
		cancel()
		wg.Wait()
	})
}

// While no session opens or ends, the holder does not list its sessions
// every tick (a large idle table would cost that much CPU), yet keeps
// telling the standby its table is alive, lists again on the first
// change, and at least every relistEvery all the same.
func TestShareListsSessionsOnlyWhenTheyChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nets := newFakeNets("lb1", "lb2")
		a := newTickleNode("lb1", nets.get("lb1"), []config.VIP{tickleVIPConfig(true)})
		b := newTickleNode("lb2", nets.get("lb2"), []config.VIP{tickleVIPConfig(true)})
		a.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"), pair("10.0.0.5:6443", "10.0.0.22:40002"))
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = a.t.run(ctx) })
		wg.Go(func() { _ = b.t.run(ctx) })
		a.t.observe(tickleVIP, true)
		time.Sleep(3 * shareEvery)
		synctest.Wait()
		first := a.sessions.listings()
		if first == 0 || b.t.status(tickleVIP).Table != 2 {
			t.Fatalf("after the first share: %d listings, standby table %d; want ≥1 and 2", first, b.t.status(tickleVIP).Table)
		}

		// 2 s without a change: ten ticks, no listing, the standby's
		// copy still counts as alive and complete.
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := a.sessions.listings(); n != first {
			t.Errorf("%d listings in 2 s of unchanged sessions, want none", n-first)
		}
		if st := b.t.status(tickleVIP); st.Table != 2 {
			t.Errorf("standby table %d after the quiet ticks, want 2", st.Table)
		}

		// One client leaves: the next tick lists, and the standby follows.
		a.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"))
		time.Sleep(shareEvery)
		synctest.Wait()
		if n := a.sessions.listings(); n != first+1 {
			t.Errorf("%d listings after one change, want 1", n-first)
		}
		if st := b.t.status(tickleVIP); st.Table != 1 {
			t.Errorf("standby table %d after the change, want 1", st.Table)
		}

		// Past relistEvery without a change: one listing more.
		time.Sleep(relistEvery + shareEvery)
		synctest.Wait()
		if n := a.sessions.listings(); n != first+2 {
			t.Errorf("%d listings over %s after the change, want 2 (the change, then one safety relist)", n-first, relistEvery)
		}
		cancel()
		wg.Wait()
	})
}

// A standby that joins late (or lost a chunk) receives deltas it cannot
// apply; it asks for a snapshot and ends up with the holder's table.
func TestLateStandbyAsksForSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nets := newFakeNets("lb1")
		a := newTickleNode("lb1", nets.get("lb1"), []config.VIP{tickleVIPConfig(true)})
		a.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"), pair("10.0.0.5:6443", "10.0.0.22:40002"))
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = a.t.run(ctx) })
		a.t.observe(tickleVIP, true)
		time.Sleep(3 * shareEvery) // shared with nobody
		synctest.Wait()

		b := newTickleNode("lb2", nets.add("lb2"), []config.VIP{tickleVIPConfig(true)})
		wg.Go(func() { _ = b.t.run(ctx) })
		time.Sleep(3 * shareEvery)
		synctest.Wait()
		if got := b.t.status(tickleVIP).Table; got != 2 {
			t.Fatalf("the late standby's copy has %d connections, want 2", got)
		}
		cancel()
		wg.Wait()
	})
}

// With vips[].tickle false nothing is sent on takeover, but the replica is
// dropped all the same.
func TestTickleOffSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nets := newFakeNets("lb1", "lb2")
		a := newTickleNode("lb1", nets.get("lb1"), []config.VIP{tickleVIPConfig(false)})
		b := newTickleNode("lb2", nets.get("lb2"), []config.VIP{tickleVIPConfig(false)})
		a.sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"))
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = a.t.run(ctx) })
		wg.Go(func() { _ = b.t.run(ctx) })
		a.t.observe(tickleVIP, true)
		time.Sleep(3 * shareEvery)
		synctest.Wait()
		if got := b.t.status(tickleVIP).Table; got != 1 {
			t.Fatalf("the standby's copy has %d connections, want 1 (sharing stays on)", got)
		}
		nets.kill("lb1")
		b.t.observe(tickleVIP, true)
		time.Sleep(time.Second)
		synctest.Wait()
		if ws := b.opened(); len(ws) != 0 {
			t.Errorf("opened %d raw sockets with tickle off, want 0", len(ws))
		}
		if st := b.t.status(tickleVIP); st.LastTickled != 0 {
			t.Errorf("last tickled %d with tickle off, want 0", st.LastTickled)
		}
		cancel()
		wg.Wait()
	})
}

// A VIP announced by BGP is held by every eligible node at once: a node
// that starts announcing must not reset its peers' live connections.
func TestBGPVIPIsNeverTickled(t *testing.T) {
	v := tickleVIPConfig(true)
	v.Announce = config.AnnounceBGP
	n := newTickleNode("lb2", newFakeNets("lb2").get("lb2"), []config.VIP{v})
	n.t.observe(tickleVIP, true)
	if jobs := n.t.takeovers(); len(jobs) != 0 {
		t.Fatalf("takeover of a BGP VIP tickles %v, want nothing", jobs)
	}
}

// ackedAll is an Answered whose every target answered with an ACK of 7.
type ackedAll struct{}

func (ackedAll) Settled(tickle.Target, bool) bool   { return false }
func (ackedAll) Acked(tickle.Target) (uint32, bool) { return 7, true }

// The sender's own reset never goes to a client whose connection is a
// live session here (its ACK reached our own socket): only to the others,
// such as a connection whose 4-tuple meets a TIME_WAIT socket here. A
// session that appears later counts as soon as the view is refreshed.
func TestOwnResetsSpareLiveSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sessions := &fakeSessions{}
		sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"))
		l := &liveAware{Answered: ackedAll{}, sessions: sessions}
		live := tickle.Target{VIP: netip.MustParseAddrPort("10.0.0.5:6443"), Client: netip.MustParseAddrPort("10.0.0.21:40001")}
		gone := tickle.Target{VIP: netip.MustParseAddrPort("10.0.0.5:6443"), Client: netip.MustParseAddrPort("10.0.0.22:40002")}
		if _, ok := l.Acked(live); ok {
			t.Error("a live session here would get a reset")
		}
		if seq, ok := l.Acked(gone); !ok || seq != 7 {
			t.Errorf("acked = %d, %v for a connection not served here, want 7", seq, ok)
		}
		sessions.set(pair("10.0.0.5:6443", "10.0.0.21:40001"), pair("10.0.0.5:6443", "10.0.0.22:40002"))
		time.Sleep(liveEvery)
		if _, ok := l.Acked(gone); ok {
			t.Error("a session that opened since would get a reset")
		}
	})
}
