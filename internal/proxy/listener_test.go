package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

// listenReuse opens a set of n SO_REUSEPORT sockets on 127.0.0.1, port 0.
func listenReuse(t *testing.T, n int) *reuseListener {
	t.Helper()
	ln, err := listenSockets(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), n)
	if err != nil {
		t.Fatal(err)
	}
	rl, ok := ln.(*reuseListener)
	if !ok {
		_ = ln.Close()
		t.Fatalf("listenSockets(%d) returned a %T, want a set of sockets", n, ln)
	}
	t.Cleanup(func() { _ = rl.Close() })
	return rl
}

// Several sockets, each with its accept loop, share one port: every
// connection is accepted once, and the address stays closed to anyone
// else, even to sockets that set SO_REUSEPORT themselves (as HAProxy's do).
func TestReusePortSocketsShareOnePort(t *testing.T) {
	rl := listenReuse(t, 4)
	addr := rl.Addr().String()
	for i, s := range rl.socks {
		if s.Addr().String() != addr {
			t.Fatalf("socket %d listens on %s, want %s", i, s.Addr(), addr)
		}
	}
	if l, err := net.Listen("tcp4", addr); err == nil {
		_ = l.Close()
		t.Fatal("a plain socket could bind the address too")
	}
	if l, err := listenSockets(context.Background(), netipAddrPort(t, addr), 2); err == nil {
		_ = l.Close()
		t.Fatal("a second set of SO_REUSEPORT sockets joined the first")
	}

	const conns = 64
	got := make(chan string, conns)
	go func() {
		for range conns {
			c, err := rl.Accept()
			if err != nil {
				got <- "accept: " + err.Error()
				continue
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				b, err := io.ReadAll(c)
				if err != nil {
					got <- "read: " + err.Error()
					return
				}
				got <- string(b)
			}()
		}
	}()
	want := make([]string, 0, conns)
	for i := range conns {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("conn %02d", i)
		want = append(want, id)
		if _, err := io.WriteString(c, id); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	var seen []string
	timeout := time.After(10 * time.Second)
	for range conns {
		select {
		case s := <-got:
			seen = append(seen, s)
		case <-timeout:
			t.Fatalf("only %d of %d connections accepted", len(seen), conns)
		}
	}
	sort.Strings(seen)
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Fatalf("connections accepted (-want +got):\n%s", diff)
	}
}

// Close closes every socket: Accept ends, a connect is refused, the
// address is free again and every accept loop has ended (goleak checks).
func TestReusePortCloseStopsAll(t *testing.T) {
	rl := listenReuse(t, 4)
	addr := rl.Addr().String()
	accepted := make(chan error, 1)
	go func() {
		_, err := rl.Accept()
		accepted <- err
	}()
	// Accept has started the loops (or is about to); Close must stop them
	// either way.
	if err := rl.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if c, err := net.DialTimeout("tcp4", addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("a connect succeeded after Close")
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("the address is still taken after Close: %v", err)
	}
	_ = l.Close()
	if _, err := rl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// A deadline wakes Accept without closing anything, and clearing it lets
// Accept go on with connections that arrived meanwhile.
func TestReusePortDeadline(t *testing.T) {
	rl := listenReuse(t, 2)
	if err := rl.SetDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Accept past the deadline: %v, want a timeout", err)
	}
	c, err := net.Dial("tcp4", rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := rl.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	a, err := rl.Accept()
	if err != nil {
		t.Fatalf("Accept after clearing the deadline: %v", err)
	}
	_ = a.Close()
}

// A reload hands the whole set over: a connection queued while the old
// frontend stops is served by the new one, and the address is never free.
func TestReusePortHandOver(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	rl := listenReuse(t, 4)
	addr := rl.Addr().String()
	bind := netipAddrPort(t, addr)
	old := NewFrontend(config.Frontend{Name: "fe", Bind: bind}, newPool(config.RoundRobin, b0.server()),
		Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
	octx, ocancel := context.WithCancel(context.Background())
	odone := make(chan error, 1)
	go func() { odone <- old.Serve(octx, rl) }()
	defer func() {
		ocancel()
		if err := <-odone; err != nil {
			t.Errorf("old frontend: %v", err)
		}
	}()
	<-old.Ready()
	open := dial(t, addr)
	if got := open.greeting(t); got != "s0" {
		t.Fatalf("first session reached %q, want s0", got)
	}

	ln, err := old.HandOver()
	if err != nil {
		t.Fatal(err)
	}
	if ln != net.Listener(rl) {
		t.Fatalf("handed over a %T, want the set of sockets", ln)
	}
	queued := dial(t, addr)
	if l, err := net.Listen("tcp4", addr); err == nil {
		_ = l.Close()
		t.Fatal("the address was free after the hand-over")
	}

	next := NewFrontend(config.Frontend{Name: "fe2", Bind: bind}, newPool(config.RoundRobin, b1.server()),
		Options{Timeouts: testTimeouts()}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("new frontend: %v", err)
		}
	}()
	if got := queued.greeting(t); got != "s1" {
		t.Fatalf("the connection queued during the hand-over reached %q, want s1 (the new frontend)", got)
	}
	for range 8 {
		if got := dial(t, addr).greeting(t); got != "s1" {
			t.Fatalf("a connection after the hand-over reached %q, want s1", got)
		}
	}
	open.echo(t, "still here")
}
