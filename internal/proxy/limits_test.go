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
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/internal/config"
	"halb/test/support"
)

// exhaustedDialer fails its first n dials as a host out of descriptors
// does, then dials for real.
type exhaustedDialer struct {
	n     atomic.Int32
	dials atomic.Int32
	d     net.Dialer
}

func (e *exhaustedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	e.dials.Add(1)
	if e.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("socket", syscall.EMFILE)}
	}
	return e.d.DialContext(ctx, network, addr)
}

// A dial that fails because this host has no descriptor left says nothing
// about the server: it stays up, no other server is tried (it would fail
// alike), and once descriptors are back the next client is served.
func TestLocalExhaustionKeepsServersUp(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	p := newPool(config.RoundRobin, b0.server(), b1.server())
	d := &exhaustedDialer{}
	d.n.Store(1)
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts(), Dialer: d})

	expectRejected(t, fe.addr, 5*time.Second)
	r := fe.log.waitEnd(t, fmt.Sprintf("connect: dial tcp: socket: %v", syscall.EMFILE))
	if r["server"] == "" {
		t.Errorf("the failed session names no server: %v", r)
	}
	if n := d.dials.Load(); n != 1 {
		t.Errorf("%d dials for one client, want 1: other servers fail alike", n)
	}
	for _, s := range p.Servers() {
		if !s.Up() || s.Stats().ConnectFailures != 0 {
			t.Errorf("server %s: up %v, %d connect failures after a local EMFILE", s.Name(), s.Up(), s.Stats().ConnectFailures)
		}
	}
	c := dial(t, fe.addr)
	c.greeting(t)
	c.echo(t, "back")
}

// emfileListener fails the fails Accepts before each connection it hands
// out with EMFILE, and records when each call began.
type emfileListener struct {
	net.Listener
	fails int

	mu    sync.Mutex
	calls []time.Time   // since the last connection
	per   [][]time.Time // the calls that led to each connection
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	failing := len(l.calls) <= l.fails
	l.mu.Unlock()
	if failing {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.per = append(l.per, l.calls)
		l.calls = nil
		l.mu.Unlock()
	}
	return c, err
}

// Accept errors back off (5, 10, 20, 40 ms…) instead of spinning, a client
// queued meanwhile is served once accepts work again, and the back-off
// starts over after a success.
func TestAcceptRecoversAfterEMFILE(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const fails = 4
	ln := &emfileListener{Listener: inner, fails: fails}
	f := NewFrontend(config.Frontend{Name: "fe"}, p, Options{Timeouts: testTimeouts()}, discardLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.serve(ctx, ctx, ln, func() {}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	for range 3 {
		c := dial(t, inner.Addr().String())
		c.greeting(t)
		c.echo(t, "served")
		_ = c.Close()
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	steps := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	for i, calls := range ln.per {
		if len(calls) != fails+1 {
			t.Fatalf("connection %d took %d accept calls, want %d: one per failure and one that accepted", i, len(calls), fails+1)
		}
		for k, min := range steps {
			if gap := calls[k+1].Sub(calls[k]); gap < min {
				t.Errorf("connection %d: %s between failure %d and the next call, want a back-off of at least %s", i, gap, k+1, min)
			}
		}
		// Timers never fire early, only late; without a reset after each
		// success the third round's steps would be a second each.
		if total := calls[fails].Sub(calls[0]); total > time.Second {
			t.Errorf("connection %d: back-off took %s: it did not start over after the previous success", i, total)
		}
	}
}

// TestFDExhaustionChild is the proxy process of TestFDExhaustionRecovers,
// run with a low open-file limit; alone it skips.
func TestFDExhaustionChild(t *testing.T) {
	backend := os.Getenv("HALB_TEST_FDLIMIT_BACKEND")
	if backend == "" {
		t.Skip("the child process of TestFDExhaustionRecovers")
	}
	ap := netip.MustParseAddrPort(backend)
	p := newPool(config.RoundRobin, config.Server{Name: "s0", Address: ap, Weight: 1})
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("frontend", "fe")
	f := NewFrontend(config.Frontend{Name: "fe", Bind: netip.MustParseAddrPort("127.0.0.1:0")}, p,
		Options{Timeouts: testTimeouts(), ConnLog: true}, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	<-f.Ready()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Room for a few sessions (two sockets each, and a splice pipe while
	// bytes move), then nothing; an odd slack leaves one descriptor over,
	// enough to accept but not to dial.
	slack, err := strconv.Atoi(os.Getenv("HALB_TEST_FDLIMIT_SLACK"))
	if err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(len(fds) + slack)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADDR %s\n", f.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	fmt.Printf("SERVER_UP %v\n", p.Servers()[0].Up())
}

// childLog keeps a child's log lines as they arrive, for counting.
type childLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *childLog) follow(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, sc.Text())
		l.mu.Unlock()
	}
}

// count returns how many lines contain s.
func (l *childLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func (l *childLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// greeted reads the backend's greeting within d: "ok", "waiting" when
// nothing came, or "reset" when the proxy closed the connection.
func greeted(c net.Conn, r *bufio.Reader, d time.Duration) string {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := r.ReadString('\n')
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ne) && ne.Timeout():
		return "waiting"
	}
	return "reset"
}

// With the real open-file limit reached (in a child process, as the limit
// is per process), the proxy keeps the sessions it has, does not spin on
// accept or dial errors, and serves new clients once descriptors are free
// again; the server is never marked down. With no descriptor left accepts
// fail and queued clients wait; with one left accepts work but dials do
// not, and queued clients are refused at a backed-off pace.
func TestFDExhaustionRecovers(t *testing.T) {
	t.Run("accept fails", func(t *testing.T) { fdExhaustion(t, 10) })
	t.Run("dial fails", func(t *testing.T) { fdExhaustion(t, 11) })
}

func fdExhaustion(t *testing.T, slack int) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFDExhaustionChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HALB_TEST_FDLIMIT_BACKEND="+b0.addr.String(), fmt.Sprintf("HALB_TEST_FDLIMIT_SLACK=%d", slack))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &childLog{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 16)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		logs.follow(stderr)
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		<-followed // Wait closes the pipes: read both to the end first
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("child stopped by kill: %v", err)
			}
		}
	})
	next := func(prefix string) string {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child ended before %q; log:\n%s", prefix, logs.String())
				}
				if v, ok := strings.CutPrefix(l, prefix); ok {
					return v
				}
			case <-timeout:
				t.Fatalf("no %q from the child after 15s", prefix)
			}
		}
	}
	addr := next("ADDR ")

	type client struct {
		c net.Conn
		r *bufio.Reader
	}
	var served, waiting []client
	resets := 0
	for i := 0; i < 40 && len(waiting)+resets < 4; i++ {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			resets++ // refused before the handshake was seen complete
			continue
		}
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer func() { _ = c.Close() }()
		cl := client{c, bufio.NewReader(c)}
		switch greeted(c, cl.r, 500*time.Millisecond) {
		case "ok":
			served = append(served, cl)
		case "waiting":
			waiting = append(waiting, cl)
		default:
			resets++
		}
	}
	if len(served) < 1 || len(waiting)+resets < 4 {
		t.Fatalf("the limit was not reached as planned: %d served, %d waiting, %d reset", len(served), len(waiting), resets)
	}
	// Exhausted: count how often the proxy tries over a window.
	const window = 2 * time.Second
	events := func() int { return logs.count("accept failed") + logs.count("out of resources") }
	before := events()
	time.Sleep(window) // the span over which attempts are counted
	n := events() - before
	t.Logf("exhausted: %d served, %d queued, %d refused; %d failed attempts in %s", len(served), len(waiting), resets, n, window)
	if n > 15 {
		t.Errorf("%d accept or dial attempts failed in %s of exhaustion: the proxy spins instead of backing off", n, window)
	}
	for _, s := range served {
		if greeted(s.c, s.r, 10*time.Millisecond) == "reset" {
			t.Error("a session open before the exhaustion was closed by it")
		}
	}

	// Free descriptors: no queued client is left hanging (each is served,
	// or was refused while nothing was free), and new ones are served.
	closedBefore := logs.count(`"end":"client closed"`)
	for _, s := range served {
		_ = s.c.Close()
	}
	if !support.Eventually(10*time.Second, func() bool { return logs.count(`"end":"client closed"`) >= closedBefore+len(served) }) {
		t.Fatalf("the proxy did not log the end of the %d sessions whose clients left", len(served))
	}
	ok := 0
	for _, w := range waiting {
		switch greeted(w.c, w.r, 5*time.Second) {
		case "ok":
			ok++
		case "waiting":
			t.Error("a queued client still waits 5s after descriptors were freed")
		}
	}
	t.Logf("after freeing: %d of %d queued clients served, the rest refused", ok, len(waiting))
	for _, w := range waiting {
		_ = w.c.Close()
	}
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := greeted(c, bufio.NewReader(c), 5*time.Second); got != "ok" {
		t.Errorf("a new client after recovery: %s", got)
	}
	_ = c.Close()

	_ = stdin.Close()
	if up := next("SERVER_UP "); up != "true" {
		t.Errorf("the server is down after local fd exhaustion; log:\n%s", logs.String())
	}
	if err := <-exited; err != nil {
		t.Errorf("child: %v; log:\n%s", err, logs.String())
	}
	stopped = true
}
