package netnsrun_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"halb/test/netnsrun"
	"halb/test/support"
)

// TestDialerConnectsFromTheNamespace dials 127.0.0.1 through a Dialer: a
// listener on that port exists only inside the namespace, so an answer
// proves the socket lives there; a closed port is refused with the
// errno, and a dial that cannot finish ends with its context.
func TestDialerConnectsFromTheNamespace(t *testing.T) {
	support.RequireRoot(t, "build a network namespace")
	ns := fmt.Sprintf("nsrD%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	ln, err := netnsrun.Do(ns, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	support.Serve(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	target := netip.MustParseAddrPort(ln.Addr().String())

	d, err := netnsrun.NewDialer(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	ctx := t.Context()
	for i := range 3 { // a reused Dialer keeps working
		c, err := d.DialContext(ctx, target)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through the dialed connection: %q, %v", buf, err)
		}
		_ = c.Close()
	}

	// The root namespace has no such listener; inside, a closed port.
	closed, err := netnsrun.Do(ns, func() (netip.AddrPort, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return netip.AddrPort{}, err
		}
		defer func() { _ = l.Close() }()
		return netip.ParseAddrPort(l.Addr().String())
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialContext(ctx, closed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed port: %v, want connection refused", err)
	}

	// A listener whose accept queue is full drops further SYNs: a dial
	// to it ends with its context, not later.
	full, err := netnsrun.Do(ns, func() (net.Listener, error) { return listenBacklog0() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = full.Close() })
	fullAddr := netip.MustParseAddrPort(full.Addr().String())
	for i := 0; ; i++ {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		c, err := d.DialContext(short, fullAddr)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("dial a full accept queue: %v, want the context's deadline", err)
			}
			break
		}
		t.Cleanup(func() { _ = c.Close() })
		if i == 8 {
			t.Fatal("9 dials to a listener with backlog 0 all connected: nothing left to time out")
		}
	}
}

// listenBacklog0 listens on 127.0.0.1 with the smallest accept queue and
// never accepts.
func listenBacklog0() (net.Listener, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "backlog0")
	defer func() { _ = f.Close() }()
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return nil, err
	}
	if err := syscall.Listen(fd, 0); err != nil {
		return nil, err
	}
	return net.FileListener(f)
}
