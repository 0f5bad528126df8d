package pool

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"halb/internal/config"
	"halb/internal/health"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func backend(balance config.Balance, weights ...int) config.Backend {
	b := config.Backend{
		Name:    "api",
		Balance: balance,
		Health:  config.HealthCheck{Rise: 2, Fall: 3},
	}
	for i, w := range weights {
		b.Servers = append(b.Servers, config.Server{
			Name:    fmt.Sprintf("s%d", i),
			Address: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.%d:6443", i+10)),
			Weight:  w,
		})
	}
	return b
}

var ok = health.Result{OK: true, Reason: "200 OK"}
var bad = health.Result{OK: false, Reason: "connection refused"}

func allUp(p *Pool) {
	for _, s := range p.Servers() {
		s.ReportCheck(ok)
	}
}

func client(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func counts(p *Pool, n int, pick func(i int) *Server) map[string]int {
	c := map[string]int{}
	for i := range n {
		s := pick(i)
		if s == nil {
			c["<nil>"]++
			continue
		}
		c[s.Name()]++
	}
	return c
}

func TestUnknownIsNotUpUntilFirstResult(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard())
	if p.Healthy() || p.Pick(client(1), nil) != nil {
		t.Fatal("a server without any check result must not take connections")
	}
	p.Servers()[0].ReportCheck(ok)
	if !p.Healthy() || p.Pick(client(1), nil) == nil {
		t.Fatal("the first successful result must bring the server up at once, not after rise")
	}
}

func TestFirstFailureIsDownAtOnce(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard())
	s := p.Servers()[0]
	s.ReportCheck(bad)
	if s.Up() || !s.Stats().Known {
		t.Fatalf("up=%v known=%v after first failure, want down and known", s.Up(), s.Stats().Known)
	}
}

func TestRiseAndFall(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard())
	s := p.Servers()[0]
	s.ReportCheck(ok)
	for i := range 2 {
		s.ReportCheck(bad)
		if !s.Up() {
			t.Fatalf("down after %d failures, fall is 3", i+1)
		}
	}
	s.ReportCheck(bad)
	if s.Up() {
		t.Fatal("still up after 3 failures, fall is 3")
	}
	s.ReportCheck(ok)
	if s.Up() {
		t.Fatal("up after 1 success, rise is 2")
	}
	s.ReportCheck(ok)
	if !s.Up() {
		t.Fatal("still down after 2 successes, rise is 2")
	}
}

func TestMarkDownNeedsRiseToReturn(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 1), discard())
	allUp(p)
	s0 := p.Servers()[0]
	s0.MarkDown("connect: connection refused")
	if s0.Up() {
		t.Fatal("MarkDown left the server up")
	}
	for range 10 {
		if got := p.Pick(client(1), nil); got != p.Servers()[1] {
			t.Fatalf("picked %v, want only s1 while s0 is marked down", got)
		}
	}
	s0.ReportCheck(ok)
	if s0.Up() {
		t.Fatal("one success brought a marked-down server back; rise is 2")
	}
	s0.ReportCheck(ok)
	if !s0.Up() {
		t.Fatal("rise successes did not bring the server back")
	}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 1, 1), discard())
	allUp(p)
	got := counts(p, 999, func(i int) *Server { return p.Pick(client(i), nil) })
	for _, name := range []string{"s0", "s1", "s2"} {
		if got[name] != 333 {
			t.Fatalf("counts %v, want 333 each", got)
		}
	}
}

func TestRoundRobinWeights(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 2, 3), discard())
	allUp(p)
	got := counts(p, 600, func(i int) *Server { return p.Pick(client(i), nil) })
	want := map[string]int{"s0": 100, "s1": 200, "s2": 300}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("counts %v, want %v", got, want)
		}
	}
}

func TestRoundRobinIsSmooth(t *testing.T) {
	// Weights 5,1,1 must interleave (a a b a c a a), not send five in a row.
	p := New(backend(config.RoundRobin, 5, 1, 1), discard())
	allUp(p)
	var seq []string
	for i := range 7 {
		seq = append(seq, p.Pick(client(i), nil).Name())
	}
	if got, want := strings.Join(seq, " "), "s0 s0 s1 s0 s2 s0 s0"; got != want {
		t.Fatalf("sequence %q, want %q", got, want)
	}
}

func TestPickSkipsTriedDownAndAdmin(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 1, 1), discard())
	allUp(p)
	s := p.Servers()
	s[1].SetAdmin(Drain)
	s[2].SetAdmin(Disabled)
	for range 5 {
		if got := p.Pick(client(1), nil); got != s[0] {
			t.Fatalf("picked %v, want s0: s1 drains, s2 is disabled", got.Name())
		}
	}
	if got := p.Pick(client(1), []*Server{s[0]}); got != nil {
		t.Fatalf("picked %v, want nil: s0 was tried, others out of service", got.Name())
	}
	if s[1].Stats().Admin != Drain {
		t.Fatalf("admin %v, want drain", s[1].Stats().Admin)
	}
	s[0].SetAdmin(Disabled)
	if p.Healthy() {
		t.Fatal("Healthy with every server disabled or draining")
	}
	s[2].SetAdmin(Enabled)
	if got := p.Pick(client(1), nil); got != s[2] {
		t.Fatalf("picked %v, want re-enabled s2", got)
	}
}

func TestBackupOnlyWhenNoPrimaryUp(t *testing.T) {
	cfg := backend(config.RoundRobin, 1, 1, 1)
	cfg.Servers[2].Backup = true
	p := New(cfg, discard())
	allUp(p)
	s := p.Servers()
	got := counts(p, 100, func(i int) *Server { return p.Pick(client(i), nil) })
	if got["s2"] != 0 {
		t.Fatalf("backup used while primaries are up: %v", got)
	}
	s[0].MarkDown("test")
	s[1].MarkDown("test")
	if got := p.Pick(client(1), nil); got != s[2] {
		t.Fatalf("picked %v, want backup s2 with both primaries down", got)
	}
	s[0].ReportCheck(ok)
	s[0].ReportCheck(ok)
	if got := p.Pick(client(1), nil); got != s[0] {
		t.Fatalf("picked %v, want s0 once a primary is back", got)
	}
}

func TestLeastConn(t *testing.T) {
	p := New(backend(config.LeastConn, 1, 1, 1), discard())
	allUp(p)
	s := p.Servers()
	var releases []func()
	for range 3 {
		releases = append(releases, s[0].Track(io.NopCloser(nil)))
	}
	releases = append(releases, s[1].Track(io.NopCloser(nil)))
	if got := p.Pick(client(1), nil); got != s[2] {
		t.Fatalf("picked %s, want s2 with no connections", got.Name())
	}
	release2 := s[2].Track(io.NopCloser(nil))
	// s1 and s2 now tie at one connection each; ties must rotate.
	a, b := p.Pick(client(1), nil), p.Pick(client(1), nil)
	if a == b || a == s[0] || b == s[0] {
		t.Fatalf("ties picked %s then %s, want s1 and s2 in rotation", a.Name(), b.Name())
	}
	for _, r := range releases {
		r()
		r() // release is idempotent
	}
	release2()
	for _, sv := range s {
		if n := sv.Stats().Active; n != 0 {
			t.Fatalf("%s active %d after release, want 0", sv.Name(), n)
		}
	}
	if got := s[0].Stats().Total; got != 3 {
		t.Fatalf("s0 total %d, want 3", got)
	}
}

func TestLeastConnIsWeightAware(t *testing.T) {
	p := New(backend(config.LeastConn, 1, 3), discard())
	allUp(p)
	// Simulate long-lived connections: each pick stays open.
	for range 400 {
		s := p.Pick(client(1), nil)
		s.Track(io.NopCloser(nil))
	}
	a, b := p.Servers()[0].Stats().Active, p.Servers()[1].Stats().Active
	if a != 100 || b != 300 {
		t.Fatalf("active %d/%d, want 100/300 for weights 1/3", a, b)
	}
}

func TestSourceSticksAndSpreads(t *testing.T) {
	p := New(backend(config.Source, 1, 1, 1), discard())
	allUp(p)
	const clients = 3000
	first := make([]*Server, clients)
	for i := range clients {
		first[i] = p.Pick(client(i), nil)
	}
	for i := range clients {
		if p.Pick(client(i), nil) != first[i] {
			t.Fatalf("client %d moved without any change", i)
		}
	}
	got := counts(p, clients, func(i int) *Server { return first[i] })
	for _, n := range []string{"s0", "s1", "s2"} {
		if got[n] < 900 || got[n] > 1100 {
			t.Fatalf("spread %v, want each within ±10%% of 1000", got)
		}
	}

	// One server goes down: only its clients move.
	down := p.Servers()[1]
	down.MarkDown("test")
	moved := 0
	for i := range clients {
		now := p.Pick(client(i), nil)
		if first[i] == down {
			if now == down || now == nil {
				t.Fatalf("client %d still on the down server", i)
			}
			continue
		}
		if now != first[i] {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d clients of healthy servers moved when another went down", moved)
	}

	// It comes back: everyone is where they started.
	down.ReportCheck(ok)
	down.ReportCheck(ok)
	for i := range clients {
		if p.Pick(client(i), nil) != first[i] {
			t.Fatalf("client %d not back on its server after recovery", i)
		}
	}
}

func TestSourceSameAcrossPools(t *testing.T) {
	// Two halb nodes build their pools independently; a client must map
	// to the same server on both, even if servers are listed differently.
	cfg := backend(config.Source, 1, 1, 1)
	rev := cfg
	rev.Servers = []config.Server{cfg.Servers[2], cfg.Servers[0], cfg.Servers[1]}
	a, b := New(cfg, discard()), New(rev, discard())
	allUp(a)
	allUp(b)
	for i := range 500 {
		if x, y := a.Pick(client(i), nil).Name(), b.Pick(client(i), nil).Name(); x != y {
			t.Fatalf("client %d: %s on one node, %s on the other", i, x, y)
		}
	}
}

func TestSourceWeights(t *testing.T) {
	p := New(backend(config.Source, 1, 3), discard())
	allUp(p)
	got := counts(p, 4000, func(i int) *Server { return p.Pick(client(i), nil) })
	if got["s0"] < 900 || got["s0"] > 1100 {
		t.Fatalf("spread %v, want s0 near 1000 (weight 1 of 4)", got)
	}
}

func TestSourceIPv4Mapped(t *testing.T) {
	p := New(backend(config.Source, 1, 1, 1), discard())
	allUp(p)
	for i := range 100 {
		v4 := client(i)
		mapped := netip.AddrFrom16(v4.As16())
		if p.Pick(v4, nil) != p.Pick(mapped, nil) {
			t.Fatalf("%s and %s picked different servers", v4, mapped)
		}
	}
}

type closeCounter struct{ n *atomic.Int32 }

func (c closeCounter) Close() error { c.n.Add(1); return nil }

// withSessions returns an up server with n tracked sessions, which count
// their closes in closed.
func withSessions(closeOnDown bool, n int) (s *Server, closed *atomic.Int32) {
	cfg := backend(config.RoundRobin, 1)
	cfg.CloseOnDown = closeOnDown
	s = New(cfg, discard()).Servers()[0]
	s.ReportCheck(ok)
	closed = new(atomic.Int32)
	for range n {
		s.Track(closeCounter{closed})
	}
	return s, closed
}

func TestCloseOnDown(t *testing.T) {
	for _, closeOnDown := range []bool{true, false} {
		t.Run(fmt.Sprint(closeOnDown), func(t *testing.T) {
			s, closed := withSessions(closeOnDown, 5)
			released := s.Track(closeCounter{closed})
			released()
			for range 3 {
				s.ReportCheck(bad)
			}
			want := int32(0)
			if closeOnDown {
				want = 5
			}
			if got := closed.Load(); got != want {
				t.Fatalf("closed %d connections, want %d", got, want)
			}
		})
	}
}

func TestChangedCoalescesAndNeverBlocks(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 1), discard())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			p.Servers()[0].ReportCheck(ok)
			p.Servers()[0].MarkDown("flap")
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("state changes blocked on an unread Changed channel")
	}
	select {
	case <-p.Changed():
	default:
		t.Fatal("no notification after state changes")
	}
	select {
	case <-p.Changed():
		t.Fatal("notifications did not coalesce")
	default:
	}
	p.Servers()[1].ReportCheck(bad) // unknown -> down is a change
	select {
	case <-p.Changed():
	default:
		t.Fatal("no notification after a server became known down")
	}
	p.Servers()[1].ReportCheck(bad) // no change: no notification
	select {
	case <-p.Changed():
		t.Fatal("notification without a state change")
	default:
	}
}

func TestTransitionsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	p := New(backend(config.RoundRobin, 1), log)
	s := p.Servers()[0]
	s.ReportCheck(health.Result{OK: true, Reason: "handshake ok"})
	s.MarkDown("dial tcp: connection refused")
	out := buf.String()
	for _, want := range []string{
		`level=INFO msg="server up" backend=api server=s0 reason="handshake ok"`,
		`level=INFO msg="server down" backend=api server=s0 reason="dial tcp: connection refused"`,
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestStats(t *testing.T) {
	p := New(backend(config.RoundRobin, 2), discard())
	s := p.Servers()[0]
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.ReportCheck(health.Result{OK: true, Reason: "200 OK", At: at, Latency: time.Millisecond})
	rel := s.Track(io.NopCloser(nil))
	s.AddBytes(10, 20)
	s.AddConnectFailure()
	s.AddRetry()
	st := s.Stats()
	if st.Name != "s0" || st.Weight != 2 || !st.Up || !st.Known || !st.Since.Equal(at) ||
		st.LastCheck.Reason != "200 OK" || st.Active != 1 || st.Total != 1 ||
		st.BytesIn != 10 || st.BytesOut != 20 || st.ConnectFailures != 1 || st.Retries != 1 ||
		st.Admin != Enabled || st.Address != netip.MustParseAddrPort("127.0.0.10:6443") {
		t.Fatalf("unexpected stats %+v", st)
	}
	rel()
}

func TestAdminStateText(t *testing.T) {
	for _, s := range []AdminState{Enabled, Disabled, Drain} {
		b, _ := s.MarshalText()
		var back AdminState
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Fatalf("round trip of %v gave %v, %v", s, back, err)
		}
	}
	if _, err := ParseAdminState("maint"); err == nil {
		t.Fatal("unknown admin state accepted")
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, b := range []config.Balance{config.RoundRobin, config.LeastConn, config.Source} {
		p := New(backend(b, 1, 2, 3), discard())
		allUp(p)
		tried := []*Server{p.Servers()[0]}
		c := client(7)
		if n := testing.AllocsPerRun(100, func() { _ = p.Pick(c, tried) }); n != 0 {
			t.Fatalf("%s: %v allocations per Pick, want 0", b, n)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	p := New(backend(config.LeastConn, 1, 1, 1), discard())
	allUp(p)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if s := p.Pick(client(i), nil); s != nil {
					s.Track(io.NopCloser(nil))()
					s.AddBytes(1, 1)
				}
				srv := p.Servers()[(g+i)%3]
				if i%7 == 0 {
					srv.ReportCheck(bad)
				} else {
					srv.ReportCheck(ok)
				}
				_ = p.Healthy()
				_ = srv.Stats()
			}
		}()
	}
	wg.Wait()
}

func TestUpdateKeepsRemainingServers(t *testing.T) {
	p := New(backend(config.RoundRobin, 1, 1, 1), discard())
	allUp(p)
	s0, s1 := p.Servers()[0], p.Servers()[1]
	closed := &atomic.Int32{}
	s1.Track(closeCounter{closed})

	next := backend(config.RoundRobin, 3, 1) // s0 weight 3, s1 kept, s2 gone
	next.Servers = append(next.Servers, config.Server{Name: "s9", Address: netip.MustParseAddrPort("127.0.0.99:6443"), Weight: 1})
	added, removed := p.Update(next)
	if len(added) != 1 || added[0].Name() != "s9" || len(removed) != 1 || removed[0].Name() != "s2" {
		t.Fatalf("added %v, removed %v; want s9 added, s2 removed", names(added), names(removed))
	}
	if p.Servers()[0] != s0 || p.Servers()[1] != s1 || !s0.Up() || !s1.Up() {
		t.Fatal("kept servers were replaced or lost their health")
	}
	if closed.Load() != 0 || s1.Stats().Active != 1 {
		t.Fatal("an update touched an open connection of a kept server")
	}
	if added[0].Up() {
		t.Fatal("a new server is up before any check")
	}
	// The new weights apply: s0 gets 3 of every 4 picks among s0 and s1.
	c := counts(p, 400, func(int) *Server { return p.Pick(netip.Addr{}, nil) })
	if c["s0"] != 300 || c["s1"] != 100 {
		t.Errorf("picks after reweighting = %v, want s0:300 s1:100", c)
	}
	if n := removed[0].CloseConnections(); n != 0 {
		t.Errorf("closed %d connections of a server with none", n)
	}
	if got := s1.CloseConnections(); got != 1 || closed.Load() != 1 {
		t.Errorf("CloseConnections closed %d (counter %d), want 1", got, closed.Load())
	}
}

func names(ss []*Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name())
	}
	return out
}

// Found by `halb-lab chaos` (a control plane's host going silent): a failed
// connect marks the server down first (passive health, sessions kept), so
// the checks that then fail find it down already and never made a
// transition, and sessions pinned to the dead server hung until the idle
// timeout. Checks confirming the server down must close them.
func TestCloseOnDownAfterMarkDown(t *testing.T) {
	s, closed := withSessions(true, 4)
	s.MarkDown("connect: timeout after 500ms")
	if got := closed.Load(); got != 0 {
		t.Fatalf("a failed connect closed %d sessions; it must leave them to the checks", got)
	}
	s.ReportCheck(bad)
	s.ReportCheck(bad)
	if got := closed.Load(); got != 0 {
		t.Fatalf("closed %d sessions after 2 failed checks, fall is 3", got)
	}
	s.ReportCheck(bad)
	if got := closed.Load(); got != 4 {
		t.Fatalf("closed %d sessions once fall checks failed after a passive mark-down, want 4", got)
	}
}
