package pool

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"halb/internal/config"
	"halb/internal/health"
)

var (
	notReady = health.Result{OK: false, Reason: "status 500, want 200", Failure: health.NotReady}
	rejected = health.Result{OK: false, Reason: "401 Unauthorized: kube-apiserver rejects anonymous requests", Failure: health.Rejected}
	gone     = health.Result{OK: false, Reason: "connection refused", Failure: health.Gone}
)

// A server that answers "not ready" (a graceful apiserver shutdown) stops
// getting new connections, but its open sessions finish: only a server
// that is gone has them closed.
func TestNotReadyDrainsGoneCloses(t *testing.T) {
	s, closed := withSessions(true, 4)
	for range 3 {
		s.ReportCheck(notReady)
	}
	if s.Up() {
		t.Fatal("a server failing readiness fall times is still up")
	}
	if s.pool.Pick(client(1), nil) != nil {
		t.Fatal("a not-ready server was picked for a new connection")
	}
	for range 5 {
		s.ReportCheck(notReady)
	}
	if got := closed.Load(); got != 0 {
		t.Fatalf("not ready closed %d sessions, want them left to finish", got)
	}
	// Its listener closes: the checks now find it gone.
	s.ReportCheck(gone)
	s.ReportCheck(gone)
	if got := closed.Load(); got != 0 {
		t.Fatalf("closed %d sessions after 2 gone results, fall is 3", got)
	}
	s.ReportCheck(gone)
	if got := closed.Load(); got != 4 {
		t.Fatalf("closed %d sessions once checks found the server gone fall times, want 4", got)
	}
}

func TestRejectedKeepsSessions(t *testing.T) {
	s, closed := withSessions(true, 3)
	for range 6 {
		s.ReportCheck(rejected)
	}
	if s.Up() {
		t.Fatal("a server whose checks are rejected is still up")
	}
	if got := closed.Load(); got != 0 {
		t.Fatalf("a rejected check closed %d sessions; the server is alive", got)
	}
	if f := s.Stats().LastCheck.Failure; f != health.Rejected {
		t.Fatalf("last check failure %v, want rejected", f)
	}
}

// A rejected check is logged when the server goes down and when the kind
// of failure changes, never once per check.
func TestRejectedLoggedOncePerChange(t *testing.T) {
	var buf bytes.Buffer
	p := New(backend(config.RoundRobin, 1), slog.New(slog.NewTextHandler(&buf, nil)))
	s := p.Servers()[0]
	for range 10 {
		s.ReportCheck(rejected)
	}
	if n := strings.Count(buf.String(), "rejected the check's credentials"); n != 1 {
		t.Fatalf("%d warnings for 10 rejected checks, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "kube-apiserver rejects anonymous") {
		t.Fatalf("the warning lacks its level or the diagnosis:\n%s", buf.String())
	}
	for range 5 {
		s.ReportCheck(gone)
	}
	if n := strings.Count(buf.String(), "check result changed"); n != 1 {
		t.Fatalf("%d lines for rejected -> gone, want 1:\n%s", n, buf.String())
	}
}

func panicBackend(on bool) config.Backend {
	b := backend(config.RoundRobin, 1, 1, 1)
	b.PanicRouting = on
	return b
}

func TestPanicRoutingForwardsWhenEveryServerIsDown(t *testing.T) {
	p := New(panicBackend(true), discard())
	if p.Panic() || p.Pick(client(1), nil) != nil {
		t.Fatal("servers nobody has checked yet must not be used, not even in panic")
	}
	for _, s := range p.Servers() {
		s.ReportCheck(rejected)
	}
	if !p.Panic() {
		t.Fatal("every server down by checks, panic_routing on: want panic")
	}
	if p.Healthy() {
		t.Fatal("a backend in panic must not count as healthy: the node stays ineligible")
	}
	got := counts(p, 30, func(i int) *Server { return p.Pick(client(i), nil) })
	if got["<nil>"] != 0 || len(got) != 3 {
		t.Fatalf("picks in panic %v, want all three servers and no refusal", got)
	}
	// Retries still move on: every server tried means none is left.
	if s := p.Pick(client(1), p.Servers()); s != nil {
		t.Fatalf("picked %s although every server was tried", s.Name())
	}
	p.Servers()[1].ReportCheck(ok)
	p.Servers()[1].ReportCheck(ok) // rise 2
	if p.Panic() {
		t.Fatal("a server came up: panic must end")
	}
	got = counts(p, 10, func(i int) *Server { return p.Pick(client(i), nil) })
	if got["s1"] != 10 {
		t.Fatalf("after panic picks %v, want only the server that is up", got)
	}
}

func TestPanicPrefersServersThatAnswer(t *testing.T) {
	p := New(panicBackend(true), discard())
	srv := p.Servers()
	srv[0].ReportCheck(gone)
	srv[1].ReportCheck(rejected)
	srv[2].ReportCheck(notReady)
	got := counts(p, 20, func(i int) *Server { return p.Pick(client(i), nil) })
	if got["s0"] != 0 || got["s1"]+got["s2"] != 20 {
		t.Fatalf("picks %v: a gone server was preferred over ones that answer", got)
	}
	if s := p.Pick(client(1), srv[1:]); s != srv[0] {
		t.Fatalf("after the answering servers failed, picked %v, want s0", s)
	}
	// A refused connect moves an answering server to the back.
	srv[1].MarkDown("connect: connection refused")
	for i := range 10 {
		if s := p.Pick(client(i), nil); s != srv[2] {
			t.Fatalf("picked %s, want s2, the only server whose last answer was not a refusal", s.Name())
		}
	}
}

func TestPanicRespectsAdminAndSetting(t *testing.T) {
	off := New(panicBackend(false), discard())
	for _, s := range off.Servers() {
		s.ReportCheck(rejected)
	}
	if off.Panic() || off.Pick(client(1), nil) != nil {
		t.Fatal("panic_routing: false must refuse when every server is down")
	}

	p := New(panicBackend(true), discard())
	for _, s := range p.Servers() {
		s.ReportCheck(rejected)
		s.SetAdmin(Drain)
	}
	if p.Panic() || p.Pick(client(1), nil) != nil {
		t.Fatal("servers an operator drained must not get connections in panic")
	}
	p.Servers()[2].SetAdmin(Enabled)
	if s := p.Pick(client(1), nil); s != p.Servers()[2] {
		t.Fatalf("picked %v, want the one enabled server", s)
	}

	// A reload that turns panic routing off ends the panic.
	cfg := panicBackend(false)
	p.Update(cfg)
	if p.Panic() {
		t.Fatal("panic continues after a reload set panic_routing: false")
	}
}

func TestPanicLoggedOnTransitions(t *testing.T) {
	var buf bytes.Buffer
	p := New(panicBackend(true), slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		for _, s := range p.Servers() {
			s.ReportCheck(rejected)
		}
	}
	if n := strings.Count(buf.String(), "PANIC"); n != 1 {
		t.Fatalf("%d PANIC lines, want 1:\n%s", n, buf.String())
	}
	p.Servers()[0].ReportCheck(ok)
	p.Servers()[0].ReportCheck(ok)
	if !strings.Contains(buf.String(), "panic over") {
		t.Fatalf("no log when panic ended:\n%s", buf.String())
	}
}
