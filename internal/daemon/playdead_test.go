package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// accepted runs Accept on g in the background.
func accepted(g *gateListener) <-chan error {
	out := make(chan error, 1)
	go func() {
		c, err := g.Accept()
		if c != nil {
			_ = c.Close()
		}
		out <- err
	}()
	return out
}

func dial(g *gateListener) error {
	c, err := net.DialTimeout("tcp", g.Addr().String(), time.Second)
	if err == nil {
		_ = c.Close()
	}
	return err
}

func newTestGate(t *testing.T) *gateListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGateListener(netip.MustParseAddrPort("127.0.0.1:0"), ln)
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// While a hard drill plays dead, the frontend's port refuses connections
// as a killed process's does; the Accept waiting meanwhile gets the first
// connection once it is open again, on the same port.
func TestGateListenerDiesAndRevives(t *testing.T) {
	g := newTestGate(t)
	if err := dial(g); err != nil {
		t.Fatalf("before the drill: %v", err)
	}
	if _, err := g.Accept(); err != nil {
		t.Fatalf("before the drill: %v", err)
	}
	g.die()
	got := accepted(g)
	if err := dial(g); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect while dead: %v, want refused", err)
	}
	if g.listening() {
		t.Error("listening() while dead")
	}
	if err := g.revive(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := dial(g); err != nil {
		t.Fatalf("connect after revive: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Accept across the drill: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return the connection made after revive")
	}
}

// A reload hands a listener over by waking Accept with a past deadline;
// Close ends it for good. Both must work while the listener is dead.
func TestGateListenerDeadlineAndCloseWhileDead(t *testing.T) {
	g := newTestGate(t)
	g.die()
	got := accepted(g)
	if err := g.SetDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Accept after a past deadline: %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a past deadline did not wake Accept")
	}
	if err := g.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	got = accepted(g)
	_ = g.Close()
	select {
	case err := <-got:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want closed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Accept")
	}
	if err := g.revive(context.Background()); err != nil || g.listening() {
		t.Errorf("revive after Close: %v, listening %v; want it to stay closed", err, g.listening())
	}
}
