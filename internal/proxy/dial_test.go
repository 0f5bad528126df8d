package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/internal/config"
)

// fullListener is a listening socket on ip whose accept queue is full and
// never drained: the kernel drops further SYNs, so a connect to it hangs
// like one to a host that drops packets, all on loopback.
func fullListener(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	a := netip.MustParseAddr(ip).As4()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: a}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(a), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue until a connect hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp4", addr.String(), 100*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatal("accept queue never filled")
	return addr
}

// TestConnectTimeoutDefaultDialer: halb's own connect (no test dialer)
// gives up after timeouts.connect, marks the server down and retries the
// next one, and the session works.
func TestConnectTimeoutDefaultDialer(t *testing.T) {
	hole := fullListener(t, "127.0.0.98")
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, config.Server{Name: "hole", Address: hole, Weight: 1}, b0.server())
	tm := testTimeouts()
	tm.Connect = 200 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm})
	start := time.Now()
	c := dial(t, fe.addr)
	if name := c.greeting(t); name != "s0" {
		t.Fatalf("reached %s", name)
	}
	if took := time.Since(start); took < tm.Connect || took > 10*tm.Connect {
		t.Errorf("session took %s to connect, want one connect timeout (%s) and a bit", took, tm.Connect)
	}
	c.echo(t, "x")
	hs := p.Servers()[0]
	if hs.Up() {
		t.Fatal("hanging server still up after a connect timeout")
	}
	if n := hs.Stats().ConnectFailures; n != 1 {
		t.Errorf("%d connect failures on the hanging server, want 1", n)
	}
	if n := p.Servers()[1].Stats().Retries; n != 1 {
		t.Errorf("s0 retries %d, want 1", n)
	}
}

// TestDrainAbortsDefaultDial: a connect still hanging when the drain grace
// is over is abandoned, so the frontend stops in time.
func TestDrainAbortsDefaultDial(t *testing.T) {
	hole := fullListener(t, "127.0.0.98")
	p := newPool(config.RoundRobin, config.Server{Name: "hole", Address: hole, Weight: 1})
	tm := testTimeouts()
	tm.Connect = time.Minute
	tm.Drain = 100 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm})
	c := dial(t, fe.addr)
	for deadline := time.Now().Add(5 * time.Second); fe.Stats().Current != 1; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("session not admitted")
		}
	}
	start := time.Now()
	fe.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stop took %s with a dial hanging", took)
	}
	c.expectClosed(t, 5*time.Second)
	if r := fe.log.waitConns(t, 1)[0]; r["end"] != "drained" {
		t.Errorf("session ended %q, want drained", r["end"])
	}
}
