package proxy

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/internal/config"
)

// sockopt reads an int socket option of c.
func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// onlySession returns the frontend's one open session's two sockets.
func onlySession(t *testing.T, f *Frontend) (client, server net.Conn) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(f.sessions))
	}
	for s := range f.sessions {
		s.mu.Lock()
		client, server = s.client, s.server
		s.mu.Unlock()
	}
	return client, server
}

// TestKeepAlive: neither socket of a session gets TCP keep-alive unless
// timeouts.tcp_keepalive asks for it, and then both do, with its period.
func TestKeepAlive(t *testing.T) {
	for _, tt := range []struct {
		name   string
		period time.Duration
	}{
		{"off by default", 0},
		{"configured", 42 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := startBackend(t, "cp1", "127.0.0.2", modeEcho)
			tm := testTimeouts()
			tm.KeepAlive = tt.period
			fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: tm})
			c := dial(t, fe.addr)
			if got := c.greeting(t); got != "cp1" {
				t.Fatalf("greeting %q", got)
			}
			client, server := onlySession(t, fe.Frontend)
			want := 0
			if tt.period > 0 {
				want = 1
			}
			for _, sc := range []struct {
				side string
				c    net.Conn
			}{{"client", client}, {"server", server}} {
				if got := sockopt(t, sc.c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != want {
					t.Errorf("%s socket SO_KEEPALIVE = %d, want %d", sc.side, got, want)
				}
				if want == 1 {
					if got := sockopt(t, sc.c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != int(tt.period/time.Second) {
						t.Errorf("%s socket TCP_KEEPIDLE = %d, want %d", sc.side, got, int(tt.period/time.Second))
					}
				}
			}
		})
	}
}
