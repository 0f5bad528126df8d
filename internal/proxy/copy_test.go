package proxy

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// countPipes counts this process's open pipe fds.
func countPipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// settledPipes runs the GC until Go's pool of idle splice pipes is freed
// and the pipe count stops above want, or gives up after a bound.
func settledPipes(t *testing.T, want int) int {
	t.Helper()
	n := countPipes(t)
	// Freed pipes are closed by cleanups after a collection: collect until
	// the count settles or half a second has passed.
	support.Eventually(500*time.Millisecond, func() bool {
		if n = countPipes(t); n <= want {
			return true
		}
		runtime.GC()
		return false
	})
	return n
}

func TestIdleSessionsHoldNoPipes(t *testing.T) {
	// Control: the count sees the two pipes a plain io.Copy relay between
	// TCP connections holds while idle; otherwise this test proves nothing.
	t.Run("control: io.Copy holds pipes", func(t *testing.T) {
		before := settledPipes(t, 0)
		b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ln.Close() }()
		done := make(chan struct{})
		go func() {
			defer close(done)
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp4", b0.addr.String())
			if err != nil {
				_ = in.Close()
				return
			}
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
			_, _ = io.Copy(out, in)
			_ = out.Close()
		}()
		c := dial(t, ln.Addr().String())
		c.greeting(t)
		c.echo(t, "x")
		if n := countPipes(t); n < before+2 {
			t.Fatalf("%d pipes with an io.Copy relay open, want at least %d", n, before+2)
		}
		_ = c.Close()
		<-done
	})

	before := settledPipes(t, 0)
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	const sessions = 50
	for range sessions {
		c := dial(t, fe.addr)
		c.greeting(t)
		c.echo(t, "bytes flowed both ways through splice")
	}
	if got := fe.Stats().Current; got != sessions {
		t.Fatalf("%d open sessions, want %d", got, sessions)
	}
	if n := settledPipes(t, before); n > before {
		t.Fatalf("%d pipes with %d idle sessions open, want %d as before (no pipes held)", n, sessions, before)
	}
}

func TestBulkTransferIntact(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	c := dial(t, fe.addr)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	c.greeting(t)
	const size = 64 << 20
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		rng := rand.NewChaCha8([32]byte{1, 2, 3})
		buf := make([]byte, 256<<10)
		for left := size; left > 0; left -= len(buf) {
			_, _ = rng.Read(buf)
			sent.Write(buf)
			if _, err := c.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.Conn.(*net.TCPConn).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c.r)
	if err != nil {
		t.Fatalf("read back after %d bytes: %v", n, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Fatalf("read back %d bytes, want %d", n, size)
	}
	if string(sent.Sum(nil)) != string(got.Sum(nil)) {
		t.Fatal("bytes changed on the way through the proxy")
	}
	fe.log.waitEnd(t, "client closed")
	if st := fe.Stats(); st.BytesIn != size || st.BytesOut != size+3 {
		t.Fatalf("counted %d in / %d out, want %d / %d", st.BytesIn, st.BytesOut, size, size+3)
	}
}

// plainConn hides *net.TCPConn so the buffered fallback copy is used.
type plainConn struct{ net.Conn }

type plainDialer struct{ d net.Dialer }

func (p *plainDialer) DialContext(ctx contextT, network, addr string) (net.Conn, error) {
	c, err := p.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

func TestBufferedFallback(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	tm := testTimeouts()
	tm.ServerIdle = 300 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm, Dialer: &plainDialer{}})
	c := dial(t, fe.addr)
	c.greeting(t)
	msg := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB, several buffers
	for range 4 {
		c.echo(t, msg)
	}
	c.expectClosed(t, 5*time.Second)
	fe.log.waitEnd(t, "server idle timeout")
	if st := fe.Stats(); st.BytesIn != int64(4*(len(msg)+1)) {
		t.Fatalf("bytes in %d, want %d", st.BytesIn, 4*(len(msg)+1))
	}
}

func TestCopyFailureNames(t *testing.T) {
	if got := copyFailure(&net.OpError{Op: "read", Err: os.NewSyscallError("read", errConnReset())}, "client", "server"); got != "client to server: connection reset by peer" {
		t.Fatalf("got %q", got)
	}
	if got := copyFailure(net.ErrClosed, "client", "server"); got != "closed" {
		t.Fatalf("got %q", got)
	}
	if got := copyFailure(errors.New("odd"), "server", "client"); got != "server to client: odd" {
		t.Fatalf("got %q", got)
	}
}

func TestBulkBurstsReturnTheirPipes(t *testing.T) {
	before := settledPipes(t, 0)
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	// Each echo is several copy buffers long, so both directions of
	// every session splice a burst through a pipe.
	msg := strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB
	const sessions = 3 * pipePoolSize
	for range sessions {
		c := dial(t, fe.addr)
		c.greeting(t)
		c.echo(t, msg)
	}
	if got := fe.Stats().Current; got != sessions {
		t.Fatalf("%d open sessions, want %d", got, sessions)
	}
	// Idle sessions hold none; the frontend's pool keeps at most
	// pipePoolSize pipes of two fds each.
	if n := countPipes(t); n > before+2*pipePoolSize {
		t.Fatalf("%d pipe fds with %d idle sessions after bulk bursts, want at most %d", n, sessions, before+2*pipePoolSize)
	}
	if st := fe.Stats(); st.BytesIn != int64(sessions*(len(msg)+1)) {
		t.Fatalf("bytes in %d, want %d", st.BytesIn, sessions*(len(msg)+1))
	}
}
