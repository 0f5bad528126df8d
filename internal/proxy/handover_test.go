package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// A frontend replacing another on the same address takes its listener:
// a client that connects while the old one stops accepting is served by
// the new one, and the address is never free in between.
func TestHandOverKeepsTheSocket(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	old := startFrontend(t, newPool(config.RoundRobin, b0.server()), Options{Timeouts: testTimeouts()})
	open := dial(t, old.addr)
	if got := open.greeting(t); got != "s0" {
		t.Fatalf("first session reached %q, want s0", got)
	}

	ln, err := old.HandOver()
	if err != nil {
		t.Fatal(err)
	}
	// Queued in the handed-over socket's backlog, accepted by nobody yet.
	queued := dial(t, old.addr)
	// The address is still taken: nothing else can bind it.
	if l, err := net.Listen("tcp4", old.addr); err == nil {
		_ = l.Close()
		t.Fatal("the address was free after the hand-over")
	}
	select {
	case <-old.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("the old frontend did not stop accepting")
	}

	next := NewFrontend(config.Frontend{Name: "fe2", Bind: netipAddrPort(t, old.addr)}, newPool(config.RoundRobin, b1.server()),
		Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	if got := queued.greeting(t); got != "s1" {
		t.Fatalf("the connection queued during the hand-over reached %q, want s1 (the new frontend)", got)
	}
	// The old frontend's session drains as on stop; until then it works.
	open.echo(t, "still here")
	if err := next.ListenErr(); err != nil {
		t.Fatalf("new frontend: %v", err)
	}
	if old.ListenErr() == nil {
		t.Fatal("the old frontend says it still listens")
	}
}

// Once HandOver has returned, the frontend no longer counts as listening:
// status read right after a hand-over must not report a listener the
// frontend gave away. The accept loop used to hand the listener over
// before it marked itself closed; a log handler that holds it right after
// the hand-over (until the test looked, or 200 ms) makes that order show
// every time.
func TestHandedOverFrontendIsNotListening(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	looked := make(chan struct{})
	log := slog.New(holdingHandler{msg: "listener handed over", until: looked, atMost: 200 * time.Millisecond})
	fe := NewFrontend(config.Frontend{Name: "fe", Bind: netip.MustParseAddrPort("127.0.0.1:0")}, newPool(config.RoundRobin, b0.server()),
		Options{Timeouts: testTimeouts()}, log)
	run := support.Go(t, fe.Run)
	run.AwaitReady(t, fe.Ready(), 5*time.Second)
	ln, err := fe.HandOver()
	listenErr := fe.ListenErr()
	close(looked)
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	if listenErr == nil {
		t.Fatal("ListenErr is nil right after HandOver returned")
	}
	select {
	case <-fe.Closed():
	default:
		t.Fatal("Closed is still open right after HandOver returned")
	}
}

// holdingHandler discards records, but holds the goroutine logging msg
// until until is closed or atMost has passed.
type holdingHandler struct {
	msg    string
	until  <-chan struct{}
	atMost time.Duration
}

func (h holdingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h holdingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h holdingHandler) WithGroup(string) slog.Handler            { return h }
func (h holdingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		t := time.NewTimer(h.atMost)
		defer t.Stop()
		select {
		case <-h.until:
		case <-t.C:
		}
	}
	return nil
}

// Backend and maxconn change in place: open sessions stay, new ones get
// the new settings, the listening socket is the same.
func TestInPlaceChangesKeepSessions(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	fe := startFrontend(t, newPool(config.RoundRobin, b0.server()), Options{Timeouts: testTimeouts()}, func(f *config.Frontend) { f.MaxConn = 1 })
	a := dial(t, fe.addr)
	a.greeting(t)
	expectRejected(t, fe.addr, time.Second)

	fe.SetMaxConn(2)
	fe.SetBackend(newPool(config.RoundRobin, b1.server()))
	b := dial(t, fe.addr)
	if got := b.greeting(t); got != "s1" {
		t.Fatalf("a session after the change reached %q, want s1", got)
	}
	a.echo(t, "still on s0")
	if fe.Stats().Rejected != 1 {
		t.Fatalf("rejected %d, want only the one before the change", fe.Stats().Rejected)
	}
	if fe.Addr().String() != fe.addr {
		t.Fatalf("listening on %s, want still %s", fe.Addr(), fe.addr)
	}
}

// A frontend that cannot bind says why it does not listen.
func TestListenErrNamesTheAddress(t *testing.T) {
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	f := NewFrontend(config.Frontend{Name: "fe", Bind: netipAddrPort(t, held.Addr().String())}, newPool(config.RoundRobin),
		Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
	if f.ListenErr() == nil {
		t.Fatal("listening before Run")
	}
	if err := f.Run(context.Background()); err == nil {
		t.Fatal("Run on a taken address returned nil")
	}
	if err := f.ListenErr(); err == nil || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Fatalf("ListenErr = %v, want the address named", err)
	}
	if _, err := f.HandOver(); err == nil {
		t.Fatal("a frontend that never listened handed a listener over")
	}
}
