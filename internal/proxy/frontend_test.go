package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"halb/internal/config"
	"halb/internal/exitorder"
)

func TestBindAddressNotOnAnyInterface(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1) is on no interface. Binding is local: no
	// packet is sent. A plain listen fails there unless the host allows
	// non-local binds; freebind must make it work either way.
	if ln, err := net.Listen("tcp4", "192.0.2.1:0"); err == nil {
		_ = ln.Close()
		t.Log("host allows non-local binds without freebind; the control is moot")
	} else if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("plain listen on 192.0.2.1: %v, want EADDRNOTAVAIL", err)
	}
	p := newPool(config.RoundRobin)
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()}, func(f *config.Frontend) {
		f.Bind = netip.MustParseAddrPort("192.0.2.1:0")
	})
	a, ok := fe.Addr().(*net.TCPAddr)
	if !ok || a.AddrPort().Addr() != netip.MustParseAddr("192.0.2.1") || a.Port == 0 {
		t.Fatalf("listening on %v, want 192.0.2.1 with a port", fe.Addr())
	}
}

func TestIPv6Frontend(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = ln.Close()
	}
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()}, func(f *config.Frontend) {
		f.Bind = netip.MustParseAddrPort("[::1]:0")
	})
	c, err := net.DialTimeout("tcp6", fe.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := &conn{Conn: c, r: newReader(c)}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if tc.greeting(t) != "s0" {
		t.Fatal("wrong server")
	}
	tc.echo(t, "over v6")
}

func TestListenErrorReturned(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	busy := ln.Addr().(*net.TCPAddr).AddrPort()
	f := NewFrontend(config.Frontend{Name: "fe", Bind: busy}, newPool(config.RoundRobin), Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Run(ctx); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Run on a busy port: %v, want EADDRINUSE", err)
	}
	select {
	case <-f.Ready():
		t.Fatal("Ready closed though listen failed")
	default:
	}
	if f.Addr() != nil {
		t.Fatalf("Addr %v before listening", f.Addr())
	}
}

// failingListener returns EMFILE from every Accept until closed.
type failingListener struct {
	mu      sync.Mutex
	calls   int
	closed  chan struct{}
	closeMu sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	l.mu.Unlock()
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
}

func (l *failingListener) Close() error {
	l.closeMu.Do(func() { close(l.closed) })
	return nil
}

func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{} }

// The accept loop backs off on EMFILE instead of spinning. The back-off
// runs on timers, so the bubble's clock makes the count exact: calls at 0,
// 5, 15, 35, 75 and 155 ms, the next not before 315 ms.
func TestAcceptErrorsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := NewFrontend(config.Frontend{Name: "fe"}, newPool(config.RoundRobin), Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
		ln := &failingListener{closed: make(chan struct{})}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- f.serve(ctx, ctx, ln, func() {}) }()
		time.Sleep(300 * time.Millisecond) // the window in which calls are counted
		synctest.Wait()
		ln.mu.Lock()
		calls := ln.calls
		ln.mu.Unlock()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v", err)
		}
		if calls != 6 {
			t.Fatalf("%d accept calls in 300ms of EMFILE, want 6 (back-off 5, 10, 20, 40, 80, 160 ms)", calls)
		}
	})
}

func TestLimiter(t *testing.T) {
	var nilLim *Limiter
	if !nilLim.acquire() || nilLim.Current() != 0 || nilLim.Max() != 0 {
		t.Fatal("nil limiter must admit everything")
	}
	nilLim.release()
	unl := NewLimiter(0)
	for range 100 {
		if !unl.acquire() {
			t.Fatal("unlimited limiter refused")
		}
	}
	if unl.Current() != 100 {
		t.Fatalf("current %d, want 100", unl.Current())
	}
	l := NewLimiter(2)
	first, second, third := l.acquire(), l.acquire(), l.acquire()
	if !first || !second || third {
		t.Fatalf("limit 2 admitted %v %v %v, want exactly the first two", first, second, third)
	}
	l.release()
	if !l.acquire() {
		t.Fatal("a released slot must be reusable")
	}
}

// A frontend's listener is pinned at the top of the descriptor table, so a
// killed halb refuses its clients' retries from the start of its teardown;
// exitorder's tests check what a pinned listener does.
func TestListenPinsTheListener(t *testing.T) {
	ln, err := Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	if _, ok := ln.(*exitorder.Listener); !ok {
		t.Fatalf("Listen returned a %T, want a pinned listener", ln)
	}
}
