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
// noticing the FIN by itself passes the 5 s deadline. "after messages"
// first exchanges enough to make both directions read with the kernel's
// TCP_INQ hint, which lets the proxy wait without a read that finds
// nothing.
func TestDataAndFINTogether(t *testing.T) {
	tests := []struct {
		name     string
		mode     backendMode
		messages int    // echoed before the last write
		last     string // written just before the half-close
		want     string // what the client reads after it, to EOF
	}{
		{"first message", modeReplyAfterEOF, 0, "hello", "got 5\n"},
		{"after messages", modeEcho, 2 * inqAfter, "bye\n", "bye\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBackend(t, "s0", "127.0.0.11", tt.mode)
			fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts(), coldAfter: time.Hour})
			for i := range 30 {
				c := dial(t, fe.addr)
				if got := c.greeting(t); got != "s0" {
					t.Fatalf("greeting %q", got)
				}
				for range tt.messages {
					c.echo(t, "ping")
				}
				if _, err := io.WriteString(c, tt.last); err != nil {
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
				if string(rest) != tt.want {
					t.Fatalf("session %d: reply %q, want %q", i, rest, tt.want)
				}
				_ = c.Close()
			}
		})
	}
}
