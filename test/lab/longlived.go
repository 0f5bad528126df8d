package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// LongLived is a set of idle long-lived connections through the VIP from
// the client, as kubelets and controllers hold between requests: one
// request answered, then nothing, TCP keep-alive off. Watch times how
// long each takes to fail after a failure and a new one to work, with a
// timestamp per step of the reconnection, so a slow recovery can be
// pinned on the dial, the TLS handshake or the first request.
type LongLived struct {
	l      *Lab
	target netip.AddrPort
	cfg    *tls.Config // nil: plain TCP echo (HoldEcho)

	mu       sync.Mutex
	conns    []net.Conn
	replaced []net.Conn // the new connections Watch made, open until Close
	wg       sync.WaitGroup
	res      []LongLivedConn
}

// LongLivedConn is what happened to one held connection once watched. The
// reconnection steps are those of the attempt that worked; FirstTry is
// when the first attempt began, after waiting for a dial slot.
type LongLivedConn struct {
	Failed    time.Time // when its read failed (zero: still open at the bound)
	Err       error     // how it failed
	Attempts  int       // reconnection attempts, the one that worked included
	FirstTry  time.Time // when the first reconnection attempt began
	Try       time.Time // when the attempt that worked began
	Connected time.Time // its TCP handshake done
	Handshook time.Time // its TLS handshake done (equal to Connected for echo)
	Recovered time.Time // when a new connection answered a request (zero: none within the bound)
	RecErr    error     // the last reconnect error, if none worked
}

// Reset reports whether the connection failed with a reset (a tickle, or
// a packet to a host without its socket) rather than a clean close.
func (c LongLivedConn) Reset() bool { return errors.Is(c.Err, syscall.ECONNRESET) }

// openWorkers bounds the dials in flight while the connections are made.
const openWorkers = 32

// DefaultReconnectWorkers bounds the reconnections in flight after a
// failure unless Watch is told otherwise.
const DefaultReconnectWorkers = 128

// echoPing is what an echo connection's request sends; the server sends
// it back.
const echoPing = "ping\n"

// HoldLongLived opens n connections to target (the VIP's Kubernetes API)
// from the client with cfg, each with one GET /version answered, and
// leaves them idle. They are closed by Close.
func (l *Lab) HoldLongLived(ctx context.Context, target netip.AddrPort, cfg *tls.Config, n int) (*LongLived, error) {
	if cfg == nil {
		return nil, errors.New("hold long-lived TLS connections: no TLS config")
	}
	return l.hold(ctx, &LongLived{l: l, target: target, cfg: cfg}, n)
}

// HoldEcho opens n plain TCP connections to target (the VIP's IdlePort,
// served by echo servers with Options.IdleFrontend) from the client,
// each with one line echoed, and leaves them idle: the hold/echo client
// of issue 17, with no TLS in the reconnection.
func (l *Lab) HoldEcho(ctx context.Context, target netip.AddrPort, n int) (*LongLived, error) {
	return l.hold(ctx, &LongLived{l: l, target: target}, n)
}

func (l *Lab) hold(ctx context.Context, h *LongLived, n int) (*LongLived, error) {
	sem := make(chan struct{}, openWorkers)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var st LongLivedConn
			c, err := h.request(ctx, &st)
			if err != nil {
				errs <- err
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		h.Close()
		return nil, fmt.Errorf("hold %d connections to %s: %w", n, h.target, err)
	}
	return h, nil
}

// Len is how many connections are held.
func (h *LongLived) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// request opens one connection, has one request answered on it and
// returns it idle, noting in st when each step finished.
func (h *LongLived) request(ctx context.Context, st *LongLivedConn) (net.Conn, error) {
	raw, err := h.l.Dial(ctx, "cl", h.target.String())
	if err != nil {
		return nil, err
	}
	st.Connected = time.Now()
	// No keep-alive (Go's dialer turns a 15 s one on): an idle client
	// then learns of a dead connection only from the network.
	tc, ok := raw.(*net.TCPConn)
	if !ok {
		_ = raw.Close()
		return nil, fmt.Errorf("dial %s: got a %T, want a TCP connection", h.target, raw)
	}
	if err := tc.SetKeepAlive(false); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("turn keep-alive off: %w", err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := raw
	if h.cfg == nil {
		st.Handshook = st.Connected
		err = echo(raw, h.target)
	} else {
		tlc := tls.Client(raw, h.cfg.Clone())
		c = tlc
		if err = tlc.HandshakeContext(ctx); err != nil {
			err = fmt.Errorf("TLS handshake through %s: %w", h.target, err)
		} else {
			st.Handshook = time.Now()
			err = get(ctx, tlc, h.target)
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// echo sends one line on c and reads it back.
func echo(c net.Conn, target netip.AddrPort) error {
	if _, err := io.WriteString(c, echoPing); err != nil {
		return fmt.Errorf("echo request through %s: %w", target, err)
	}
	buf := make([]byte, len(echoPing))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo answer through %s: %w", target, err)
	}
	if string(buf) != echoPing {
		return fmt.Errorf("echo through %s answered %q, want %q", target, buf, echoPing)
	}
	return nil
}

// EchoOnce opens a new plain TCP connection from the client to target
// (VIP:IdlePort), has one line echoed and closes it: one fresh client's
// view of whether new connections work.
func (l *Lab) EchoOnce(ctx context.Context, target netip.AddrPort) error {
	c, err := l.Dial(ctx, "cl", target.String())
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	return echo(c, target)
}

// get sends GET /version on c and reads the answer.
func get(ctx context.Context, c net.Conn, target netip.AddrPort) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+target.String()+"/version", nil)
	if err != nil {
		return err
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("request through %s: %w", target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return fmt.Errorf("response through %s: %w", target, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /version through %s: status %d", target, resp.StatusCode)
	}
	return nil
}

// Request sends one more request on every held connection: a connection
// that survived a move must still carry one. It returns the first error.
func (h *LongLived) Request(ctx context.Context) error {
	h.mu.Lock()
	conns := append([]net.Conn(nil), h.conns...)
	h.mu.Unlock()
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		var err error
		if h.cfg == nil {
			err = echo(c, h.target)
		} else {
			err = get(ctx, c, h.target)
		}
		_ = c.SetDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("connection %d of %d: %w", i, len(conns), err)
		}
	}
	return nil
}

// Watch starts reading every held connection until it fails or bound
// passes; a connection that fails is replaced by a new one, retried
// every 100 ms until one answers a request or the bound passes, as a
// client would reconnect, and the new one stays open until Close. At most
// DefaultReconnectWorkers reconnections are in flight; WatchWith sets
// another bound. Wait returns the outcome.
func (h *LongLived) Watch(ctx context.Context, bound time.Duration) {
	h.WatchWith(ctx, bound, DefaultReconnectWorkers)
}

// WatchWith is Watch with at most workers reconnections in flight (the
// whole set if workers ≤ 0, as clients on their own hosts would).
func (h *LongLived) WatchWith(ctx context.Context, bound time.Duration, workers int) {
	h.mu.Lock()
	conns := append([]net.Conn(nil), h.conns...)
	h.res = make([]LongLivedConn, len(conns))
	h.mu.Unlock()
	if workers <= 0 {
		workers = max(len(conns), 1)
	}
	deadline := time.Now().Add(bound)
	sem := make(chan struct{}, workers)
	for i, c := range conns {
		_ = c.SetReadDeadline(deadline)
		h.wg.Go(func() {
			var r LongLivedConn
			_, r.Err = c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(r.Err, &ne) && ne.Timeout() {
				h.set(i, r) // still open at the bound
				return
			}
			r.Failed = time.Now()
			// As a client would: the dead connection is closed before
			// the new one is made, so it answers a late tickle with a
			// reset, not a duplicate ACK.
			_ = c.Close()
			h.set(i, h.reconnect(ctx, r, deadline, sem))
		})
	}
}

// reconnect retries a new connection every 100 ms until one answers or
// deadline passes, and notes the steps of the one that worked.
func (h *LongLived) reconnect(ctx context.Context, r LongLivedConn, deadline time.Time, sem chan struct{}) LongLivedConn {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sem <- struct{}{}
		var st LongLivedConn
		st.Try = time.Now()
		if r.FirstTry.IsZero() {
			r.FirstTry = st.Try
		}
		r.Attempts++
		nc, err := h.request(ctx, &st)
		<-sem
		if err == nil {
			r.Try, r.Connected, r.Handshook = st.Try, st.Connected, st.Handshook
			r.Recovered, r.RecErr = time.Now(), nil
			// Kept open, as a client keeps the watch it re-established:
			// closing it at once would load the new holder with the
			// teardown of every new connection while others still reconnect.
			h.mu.Lock()
			h.replaced = append(h.replaced, nc)
			h.mu.Unlock()
			return r
		}
		r.RecErr = err
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return r
}

func (h *LongLived) set(i int, r LongLivedConn) {
	h.mu.Lock()
	h.res[i] = r
	h.mu.Unlock()
}

// Wait waits for every watched connection to have failed and been
// replaced, or the bound, and returns what happened to each.
func (h *LongLived) Wait() []LongLivedConn {
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]LongLivedConn(nil), h.res...)
}

// Close closes every held connection and every new one Watch made.
func (h *LongLived) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	for _, c := range h.replaced {
		_ = c.Close()
	}
	h.replaced = nil
}
