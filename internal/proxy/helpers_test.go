package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/pool"
	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backendMode says what a test backend does after its greeting.
type backendMode int

const (
	modeEcho          backendMode = iota // echo everything back
	modeReplyAfterEOF                    // read to EOF, then send "got N\n" and close
	modeSink                             // read and discard, never answer
)

// testBackend is a real TCP server on 127.0.0.x. Every connection first
// receives the server's name and a newline, so a client learns where the
// proxy sent it. Copies use a plain buffer: no splice pipes of its own.
type testBackend struct {
	t        *testing.T
	name     string
	addr     netip.AddrPort
	mode     backendMode
	accepted atomic.Int64

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startBackend(t *testing.T, name, ip string, mode backendMode) *testBackend {
	t.Helper()
	b := &testBackend{t: t, name: name, mode: mode, conns: map[net.Conn]struct{}{}}
	b.listen(ip + ":0")
	t.Cleanup(func() {
		b.kill()
		b.wg.Wait()
	})
	return b
}

func (b *testBackend) listen(addr string) {
	b.t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		b.t.Fatalf("backend %s listen: %v", b.name, err)
	}
	b.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go b.acceptLoop(ln)
}

func (b *testBackend) acceptLoop(ln net.Listener) {
	defer b.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.ln != ln {
			b.mu.Unlock()
			_ = c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.accepted.Add(1)
		b.wg.Add(1)
		go b.handle(c)
	}
}

func (b *testBackend) handle(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		_ = c.Close()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
	}()
	if _, err := io.WriteString(c, b.name+"\n"); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	var total int
	for {
		n, err := c.Read(buf)
		total += n
		if n > 0 && b.mode == modeEcho {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && b.mode == modeReplyAfterEOF {
				_, _ = fmt.Fprintf(c, "got %d\n", total)
			}
			return
		}
	}
}

// kill closes the listener and every open connection, as a crashed server.
func (b *testBackend) kill() {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	conns := make([]net.Conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// restart listens again on the same address after kill.
func (b *testBackend) restart() { b.listen(b.addr.String()) }

func (b *testBackend) server() config.Server {
	return config.Server{Name: b.name, Address: b.addr, Weight: 1}
}

// newPool builds a backend over the given servers and reports them up.
func newPool(balance config.Balance, servers ...config.Server) *pool.Pool {
	p := pool.New(config.Backend{
		Name:    "be",
		Balance: balance,
		Retries: 2,
		Health:  config.HealthCheck{Rise: 2, Fall: 3},
		Servers: servers,
	}, slog.New(slog.DiscardHandler))
	for _, s := range p.Servers() {
		s.ReportCheck(health.Result{OK: true, Reason: "test"})
	}
	return p
}

func testTimeouts() config.Timeouts {
	return config.Timeouts{Connect: 2 * time.Second, ClientIdle: time.Minute, ServerIdle: time.Minute, Drain: 5 * time.Second}
}

// logRecorder is a slog handler keeping the connection log lines.
type logRecorder struct {
	attrs []slog.Attr
	store *recStore
}

type recStore struct {
	mu   sync.Mutex
	recs []map[string]string
}

func newRecorder() *logRecorder { return &logRecorder{store: &recStore{}} }

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "connection" {
		return nil
	}
	m := map[string]string{"level": r.Level.String()}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, m)
	h.store.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr{}, h.attrs...), as...), store: h.store}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// waitConns waits for at least n connection lines and returns them all.
func (h *logRecorder) waitConns(t *testing.T, n int) []map[string]string {
	t.Helper()
	var got []map[string]string
	if !support.Eventually(10*time.Second, func() bool {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		got = append(got[:0], h.store.recs...)
		return len(got) >= n
	}) {
		t.Fatalf("%d connection log lines after 10s, want %d: %v", len(got), n, got)
	}
	return got
}

// waitEnd waits for a connection line with the given end reason.
func (h *logRecorder) waitEnd(t *testing.T, end string) map[string]string {
	t.Helper()
	var found map[string]string
	if !support.Eventually(10*time.Second, func() bool {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		for _, r := range h.store.recs {
			if r["end"] == end {
				found = r
				return true
			}
		}
		return false
	}) {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		t.Fatalf("no connection ended with %q after 10s; lines: %v", end, h.store.recs)
	}
	return found
}

// testFrontend runs a Frontend on 127.0.0.1:0 until the test ends.
type testFrontend struct {
	*Frontend
	addr   string
	cancel context.CancelFunc
	done   chan error
	log    *logRecorder
}

func startFrontend(t *testing.T, p *pool.Pool, opts Options, mod ...func(*config.Frontend)) *testFrontend {
	t.Helper()
	cfg := config.Frontend{Name: "fe", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Backend: p.Name()}
	for _, m := range mod {
		m(&cfg)
	}
	rec := newRecorder()
	f := NewFrontend(cfg, p, opts, slog.New(rec).With("frontend", cfg.Name))
	ctx, cancel := context.WithCancel(context.Background())
	tf := &testFrontend{Frontend: f, cancel: cancel, done: make(chan error, 1), log: rec}
	go func() { tf.done <- f.Run(ctx) }()
	select {
	case <-f.Ready():
	case err := <-tf.done:
		cancel()
		t.Fatalf("frontend run: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("frontend not ready after 5s")
	}
	tf.addr = f.Addr().String()
	t.Cleanup(func() { tf.stop(t) })
	return tf
}

// stop cancels the frontend and waits for Run to return nil; it is idempotent.
func (tf *testFrontend) stop(t *testing.T) {
	t.Helper()
	tf.cancel()
	select {
	case err, ok := <-tf.done:
		if ok && err != nil {
			t.Errorf("frontend run returned %v, want nil", err)
		}
		if ok {
			close(tf.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("frontend did not stop within 15s")
	}
}

// conn is a test client connection with a line reader.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	return dialFrom(t, addr, "")
}

func dialFrom(t *testing.T, addr, localIP string) *conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &conn{Conn: c, r: bufio.NewReader(c)}
}

// line reads one line without its newline.
func (c *conn) line() (string, error) {
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// greeting returns the name of the server this connection reached.
func (c *conn) greeting(t *testing.T) string {
	t.Helper()
	s, err := c.line()
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	return s
}

// echo sends msg and expects it back.
func (c *conn) echo(t *testing.T, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := c.line()
	if err != nil || got != msg {
		t.Fatalf("echo got %q, %v; want %q", got, err, msg)
	}
}

// expectClosed asserts the proxy closes the connection within d.
func (c *conn) expectClosed(t *testing.T, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := c.r.Read(make([]byte, 1))
	if err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s", d)
	}
}

// within reports whether got is within ±frac of want.
func within(got, want int, frac float64) bool {
	d := float64(got - want)
	return d <= frac*float64(want) && -d <= frac*float64(want)
}

type poolStats = pool.ServerStats

func newPoolFrom(cfg config.Backend) *pool.Pool {
	p := pool.New(cfg, slog.New(slog.DiscardHandler))
	for _, s := range p.Servers() {
		s.ReportCheck(health.Result{OK: true, Reason: "test"})
	}
	return p
}

func netipAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// expectRejected connects to addr and asserts the proxy closes the
// connection within d. On loopback the reset can beat the end of the
// client's connect, so a reset dial counts too.
func expectRejected(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer func() { _ = c.Close() }()
	(&conn{Conn: c, r: bufio.NewReader(c)}).expectClosed(t, d)
}

type contextT = context.Context

func errConnReset() error { return syscall.ECONNRESET }

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func netipAddrPortB(b *testing.B, s string) netip.AddrPort {
	b.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
