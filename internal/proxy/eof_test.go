package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"halb/internal/config"
)

// TestDataAndFINTogether: bytes followed at once by a FIN — a client that
// writes and half-closes, a server that answers and closes — reach the
// other side with the EOF, promptly. The proxy never parks here (cold
// after an hour) and the idle timeout is a minute, so only the copy loop
// noticing the FIN by itself passes the 5 s deadline.
func TestDataAndFINTogether(t *testing.T) {
	b := startBackend(t, "s0", "127.0.0.11", modeReplyAfterEOF)
	fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts(), coldAfter: time.Hour})
	for i := range 30 {
		c := dial(t, fe.addr)
		if got := c.greeting(t); got != "s0" {
			t.Fatalf("greeting %q", got)
		}
		if _, err := io.WriteString(c, "hello"); err != nil {
			t.Fatal(err)
		}
		if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(c.r)
		if err != nil {
			t.Fatalf("session %d: reply and EOF: %v (got %q)", i, err, rest)
		}
		if string(rest) != "got 5\n" {
			t.Fatalf("session %d: reply %q, want %q", i, rest, "got 5\n")
		}
		_ = c.Close()
	}
}

// TestDataAndFINTogetherAfterMessages: the same once both directions have
// carried enough messages to read with the kernel's TCP_INQ hint, which
// lets the proxy wait without a read that finds nothing.
func TestDataAndFINTogetherAfterMessages(t *testing.T) {
	b := startBackend(t, "s0", "127.0.0.11", modeEcho)
	fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts(), coldAfter: time.Hour})
	for i := range 30 {
		c := dial(t, fe.addr)
		if got := c.greeting(t); got != "s0" {
			t.Fatalf("greeting %q", got)
		}
		for range 2 * inqAfter {
			c.echo(t, "ping")
		}
		if _, err := io.WriteString(c, "bye\n"); err != nil {
			t.Fatal(err)
		}
		if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(c.r)
		if err != nil {
			t.Fatalf("session %d: echo and EOF: %v (got %q)", i, err, rest)
		}
		if string(rest) != "bye\n" {
			t.Fatalf("session %d: echo %q, want %q", i, rest, "bye\n")
		}
		_ = c.Close()
	}
}
