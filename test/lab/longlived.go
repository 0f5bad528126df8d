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
	"time"
)

// LongLived is a set of idle long-lived Kubernetes API connections through
// the VIP from the client, as kubelets and controllers hold between
// requests: one request answered, then nothing, TCP keep-alive off. Watch
// times how long each takes to fail after a failure and a new one to
// work.
type LongLived struct {
	l      *Lab
	target netip.AddrPort
	cfg    *tls.Config

	mu    sync.Mutex
	conns []*tls.Conn
	wg    sync.WaitGroup
	res   []LongLivedConn
}

// LongLivedConn is what happened to one held connection once watched.
type LongLivedConn struct {
	Failed    time.Time // when its read failed (zero: still open at the bound)
	Err       error     // how it failed
	Recovered time.Time // when a new connection answered a request (zero: none within the bound)
	RecErr    error     // the last reconnect error, if none worked
}

// openWorkers bounds the dials in flight while the connections are made,
// and reconnectWorkers the reconnections after a failure: each dial takes
// an OS thread into the client's namespace.
const (
	openWorkers      = 32
	reconnectWorkers = 128
)

// HoldLongLived opens n connections to target (the VIP's Kubernetes API)
// from the client with cfg, each with one GET /version answered, and
// leaves them idle. They are closed by Close.
func (l *Lab) HoldLongLived(ctx context.Context, target netip.AddrPort, cfg *tls.Config, n int) (*LongLived, error) {
	h := &LongLived{l: l, target: target, cfg: cfg}
	sem := make(chan struct{}, openWorkers)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := h.request(ctx)
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
		return nil, fmt.Errorf("hold %d connections to %s: %w", n, target, err)
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
// returns it idle.
func (h *LongLived) request(ctx context.Context) (*tls.Conn, error) {
	raw, err := h.l.Dial(ctx, "cl", h.target.String())
	if err != nil {
		return nil, err
	}
	// No keep-alive (Go's dialer turns a 15 s one on): an idle client
	// then learns of a dead connection only from the network.
	if tc, ok := raw.(*net.TCPConn); ok {
		if err := tc.SetKeepAlive(false); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("turn keep-alive off: %w", err)
		}
	} else {
		_ = raw.Close()
		return nil, fmt.Errorf("dial %s: got a %T, want a TCP connection", h.target, raw)
	}
	c := tls.Client(raw, h.cfg.Clone())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := get(ctx, c, h.target); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// get sends GET /version on c and reads the answer.
func get(ctx context.Context, c *tls.Conn, target netip.AddrPort) error {
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
	conns := append([]*tls.Conn(nil), h.conns...)
	h.mu.Unlock()
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		err := get(ctx, c, h.target)
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
// client would reconnect. Wait returns the outcome.
func (h *LongLived) Watch(ctx context.Context, bound time.Duration) {
	h.mu.Lock()
	conns := append([]*tls.Conn(nil), h.conns...)
	h.res = make([]LongLivedConn, len(conns))
	h.mu.Unlock()
	deadline := time.Now().Add(bound)
	sem := make(chan struct{}, reconnectWorkers)
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
			for time.Now().Before(deadline) && ctx.Err() == nil {
				sem <- struct{}{}
				nc, err := h.request(ctx)
				<-sem
				if err == nil {
					r.Recovered, r.RecErr = time.Now(), nil
					_ = nc.Close()
					break
				}
				r.RecErr = err
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			h.set(i, r)
		})
	}
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

// Close closes every held connection.
func (h *LongLived) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
}
