package proxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/internal/config"
)

// closedWithin asserts the proxy closes c no earlier than after and no
// later than before, counted from start.
func closedWithin(t *testing.T, c *conn, start time.Time, after, before time.Duration) {
	t.Helper()
	c.expectClosed(t, time.Until(start.Add(before)))
	if d := time.Since(start); d < after {
		t.Errorf("closed after %s, before the timeout of %s", d, after)
	}
}

// Slowloris: clients that connect and then send nothing fill maxconn, and
// the client idle timeout frees every slot, each closing counted and
// logged, so a real client gets in afterwards.
func TestSlowlorisClientsCutByIdleTimeout(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	tm := testTimeouts()
	tm.ClientIdle = 400 * time.Millisecond
	const slots = 20
	fe := startFrontend(t, p, Options{Timeouts: tm}, func(f *config.Frontend) { f.MaxConn = slots })
	start := time.Now()
	lorises := make([]*conn, slots)
	for i := range lorises {
		lorises[i] = dial(t, fe.addr)
	}
	waitCurrent(t, fe.Frontend, slots)
	expectRejected(t, fe.addr, time.Second)
	if st := fe.Stats(); st.Rejected != 1 {
		t.Fatalf("stats %+v: the client over maxconn was not rejected", st)
	}
	for _, c := range lorises {
		c.greeting(t) // the server speaks; the client never does
		closedWithin(t, c, start, tm.ClientIdle, tm.ClientIdle+5*time.Second)
	}
	recs := fe.log.waitConns(t, slots+1)
	idle := 0
	for _, r := range recs {
		if r["end"] == "client idle timeout" {
			idle++
		}
	}
	if idle != slots {
		t.Errorf("%d connections logged as client idle timeout, want %d: %v", idle, slots, recs)
	}
	waitCurrent(t, fe.Frontend, 0)
	c := dial(t, fe.addr)
	c.greeting(t)
	c.echo(t, "after the lorises")
}

// silentBackend accepts connections and never reads or writes: a server
// process that hangs.
func silentBackend(t *testing.T, ip string) config.Server {
	t.Helper()
	ln, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return config.Server{Name: "silent", Address: ln.Addr().(*net.TCPAddr).AddrPort(), Weight: 1}
}

// A server that accepts and then never answers is cut by the server idle
// timeout, whatever the client sends meanwhile, and every such session is
// logged with that reason.
func TestSilentBackendCutByServerIdle(t *testing.T) {
	p := newPool(config.RoundRobin, silentBackend(t, "127.0.0.13"))
	tm := testTimeouts()
	tm.ServerIdle = 400 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm})
	const clients = 10
	start := time.Now()
	cs := make([]*conn, clients)
	for i := range cs {
		cs[i] = dial(t, fe.addr)
		if _, err := cs[i].Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		closedWithin(t, c, start, tm.ServerIdle, tm.ServerIdle+5*time.Second)
	}
	recs := fe.log.waitConns(t, clients)
	for _, r := range recs {
		if r["end"] != "server idle timeout" {
			t.Errorf("session ended %q, want server idle timeout", r["end"])
		}
	}
	waitCurrent(t, fe.Frontend, 0)
}

// fullBacklog is a listening socket whose accept queue is full and never
// drained: the kernel drops further SYNs, as a SYN black hole does, so a
// connect to it hangs until the dialer gives up.
func fullBacklog(t *testing.T, ip string) config.Server {
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
	// Fill the queue until a connect hangs; a backlog of 0 admits one or two.
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatalf("%d connects to a listener with backlog 0 all completed", i)
		}
		c, err := net.DialTimeout("tcp4", addr.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	return config.Server{Name: "full", Address: addr, Weight: 1}
}

// A server whose listen queue is full swallows SYNs: the connect timeout
// ends the attempt, with passive_fall 1 the server is marked down for it,
// and the client is served by the next server within that one timeout.
func TestFullBacklogBackendCutByConnectTimeout(t *testing.T) {
	full := fullBacklog(t, "127.0.0.14")
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPoolFrom(config.Backend{Name: "be", Balance: config.RoundRobin, Retries: 2, PassiveFall: 1,
		Health: config.HealthCheck{Rise: 2, Fall: 3}, Servers: []config.Server{full, b0.server()}})
	tm := testTimeouts()
	tm.Connect = 300 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm})
	start := time.Now()
	c := dial(t, fe.addr)
	if name := c.greeting(t); name != "s0" {
		t.Fatalf("served by %s", name)
	}
	if d := time.Since(start); d < tm.Connect {
		t.Errorf("served after %s: the connect to the full server did not wait for its timeout (%s)", d, tm.Connect)
	}
	srv := p.Servers()[0]
	if srv.Up() || srv.Stats().ConnectFailures != 1 {
		t.Errorf("full server: up %v, %d connect failures; want down after one", srv.Up(), srv.Stats().ConnectFailures)
	}
	// Down, it is not tried again: later clients do not pay the timeout.
	for range 3 {
		dial(t, fe.addr).greeting(t)
	}
	if n := srv.Stats().ConnectFailures; n != 1 {
		t.Errorf("%d connect failures on the full server, want it skipped once down", n)
	}
}
