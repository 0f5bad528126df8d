package support

import (
	"net"
	"net/netip"
	"testing"
)

// Listen returns a TCP listener bound on addr, normally "127.0.0.x:0" so
// the kernel picks a free port; it is closed when t ends. Hand the bound
// listener (or its Addr) to the code under test instead of picking a port
// and binding it later, which races with every other test on the machine.
func Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// AddrPort returns the address a listener (or a connection's local end) is
// bound to.
func AddrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatalf("parse address %q: %v", a, err)
	}
	return ap
}

// RefusedAddr returns an address on ip where nothing listens: a port the
// kernel handed out and that was closed again. A connect there is refused.
func RefusedAddr(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	ln := Listen(t, net.JoinHostPort(ip, "0"))
	ap := AddrPort(t, ln.Addr())
	_ = ln.Close()
	return ap
}

// Serve accepts on ln until it is closed and runs handle for each
// connection on its own goroutine, closing the connection afterwards.
func Serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				handle(c)
			}()
		}
	}()
}

// Echo writes back what c sends until it closes or a write fails, with
// plain reads and writes: between two TCP conns io.Copy would splice
// through a pipe, three system calls where two do for a line, and the
// labs' echo servers should cost as little as a real server would.
func Echo(c net.Conn) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
