package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"halb/internal/config"
	"halb/internal/exitorder"
	"halb/internal/freebind"
	"halb/internal/pool"
)

// Dialer opens connections to servers; *net.Dialer implements it. It is a
// seam for tests that need a connect to hang.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Options are the settings shared by all frontends of a daemon.
type Options struct {
	Timeouts config.Timeouts
	ConnLog  bool     // log finished connections at Info instead of Debug
	Limit    *Limiter // global maxconn; nil: none
	Dialer   Dialer   // nil: a plain net.Dialer

	// coldAfter replaces hotPeriod in tests.
	coldAfter time.Duration
}

// Accept back-off bounds: on errors such as EMFILE the loop sleeps instead
// of spinning on a listener it cannot drain.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Frontend is one TCP listener forwarding to one backend pool.
type Frontend struct {
	name string
	bind netip.AddrPort
	// pool and maxConn may change while serving (a reload); a session
	// reads them once when it starts.
	pool    atomic.Pointer[pool.Pool]
	maxConn atomic.Int64
	opts    Options
	// timeouts start as opts.Timeouts; a reload swaps them for the
	// sessions that start afterwards.
	timeouts atomic.Pointer[config.Timeouts]
	// plainDialer connects without TCP keep-alive: Go's default would
	// cost four setsockopt calls per socket, and halb's idle timeouts
	// already reap sessions whose peer vanished (HAProxy sets none by
	// default either).
	plainDialer net.Dialer
	log         *slog.Logger
	bufs        sync.Pool
	pipes       *pipePool
	parker      *parker // nil until Run, and if the kernel refuses an epoll set
	hot         time.Duration

	ready  chan struct{}
	closed chan struct{} // the listener is closed or handed over: its address is free again
	addr   atomic.Pointer[net.TCPAddr]
	// stopErr says why the frontend stopped listening while it was meant
	// to serve; set before closed is closed.
	stopErr atomic.Pointer[error]

	// stopAccept ends the accept loop; with errHandOver as the cause it
	// leaves the listener open and sends it on handed.
	stopAccept context.CancelCauseFunc
	handed     chan net.Listener

	// force is cancelled when the drain grace is over: it aborts dials
	// still in progress.
	force       context.Context
	forceCancel context.CancelFunc

	mu       sync.Mutex
	sessions map[*session]struct{}
	// sessionsGen counts changes to sessions, bumped after each (see
	// SessionsVersion).
	sessionsGen atomic.Uint64
	wg          sync.WaitGroup

	current, total, rejected atomic.Int64
	bytesIn, bytesOut        atomic.Int64

	pressure pressure // accepts pause while dials fail for lack of descriptors
}

// NewFrontend builds a frontend for cfg sending connections to p. It does
// no I/O; Run listens. log is used as given: the connection log line relies
// on it carrying the frontend key, as the daemon's does.
func NewFrontend(cfg config.Frontend, p *pool.Pool, opts Options, log *slog.Logger) *Frontend {
	f := &Frontend{
		name:     cfg.Name,
		bind:     cfg.Bind,
		opts:     opts,
		handed:   make(chan net.Listener, 1),
		log:      log,
		ready:    make(chan struct{}),
		closed:   make(chan struct{}),
		sessions: make(map[*session]struct{}),
		pipes:    newPipePool(pipePoolSize),
	}
	f.plainDialer.KeepAlive = -1
	if f.hot = opts.coldAfter; f.hot <= 0 {
		f.hot = hotPeriod
	}
	to := opts.Timeouts
	f.timeouts.Store(&to)
	f.pool.Store(p)
	f.maxConn.Store(int64(cfg.MaxConn))
	f.bufs.New = func() any {
		b := make([]byte, copyBufSize)
		return &b
	}
	f.force, f.forceCancel = context.WithCancel(context.Background())
	return f
}

// Timeouts returns the timeouts new sessions get.
func (f *Frontend) Timeouts() config.Timeouts { return *f.timeouts.Load() }

// SetTimeouts changes the timeouts of sessions that start from now on, and
// the drain grace; open sessions keep the ones they started with.
func (f *Frontend) SetTimeouts(t config.Timeouts) { f.timeouts.Store(&t) }

// SetBackend sends the sessions that start from now on to p; open
// sessions stay with the pool they started with.
func (f *Frontend) SetBackend(p *pool.Pool) { f.pool.Store(p) }

// SetMaxConn changes the frontend's own connection limit (0: none) for
// connections admitted from now on; open ones above it are not closed.
func (f *Frontend) SetMaxConn(n int) { f.maxConn.Store(int64(n)) }

// Name returns the frontend's name.
func (f *Frontend) Name() string { return f.name }

// Bind returns the address the frontend listens on.
func (f *Frontend) Bind() netip.AddrPort { return f.bind }

// Ready is closed once the frontend listens.
func (f *Frontend) Ready() <-chan struct{} { return f.ready }

// Addr returns the listening address, or nil before Ready.
func (f *Frontend) Addr() net.Addr {
	if a := f.addr.Load(); a != nil {
		return a
	}
	return nil
}

// FrontendStats is a snapshot of a frontend's counters.
type FrontendStats struct {
	Name     string
	Current  int64 // open sessions
	Total    int64 // sessions admitted since start
	Rejected int64 // connections refused by maxconn
	BytesIn  int64 // client to server
	BytesOut int64 // server to client
}

// Stats returns a snapshot of the frontend's counters.
func (f *Frontend) Stats() FrontendStats {
	return FrontendStats{
		Name:     f.name,
		Current:  f.current.Load(),
		Total:    f.total.Load(),
		Rejected: f.rejected.Load(),
		BytesIn:  f.bytesIn.Load(),
		BytesOut: f.bytesOut.Load(),
	}
}

// Listen opens a listening socket on bind with IP_FREEBIND, so that an
// address this node does not hold yet (a VIP) can be bound.
func Listen(ctx context.Context, bind netip.AddrPort) (net.Listener, error) {
	network := "tcp4"
	if bind.Addr().Is6() && !bind.Addr().Is4In6() {
		network = "tcp6"
	}
	// Accepted sockets get no keep-alive setsockopts (see
	// Frontend.plainDialer); a session turns it on if configured.
	lc := net.ListenConfig{Control: freebind.Control, KeepAlive: -1}
	ln, err := lc.Listen(ctx, network, bind.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", bind, err)
	}
	// Pinned at the top of the descriptor table (internal/exitorder): if
	// the process is killed, its kernel closes the listener before the
	// proxied connections, so a client that retries at once into the
	// dying host is refused rather than accepted into a backlog nobody
	// will serve and reset when the teardown ends. Unpinned (no free
	// slot) it works the same, only closed in its turn at exit.
	pinned, _ := exitorder.PinListener(ln)
	return pinned, nil
}

// Run listens on the frontend's bind address and serves until ctx is
// cancelled. Then it stops accepting, lets open sessions finish for up to
// Timeouts.Drain, closes the rest and returns nil. Run or Serve may be
// called once.
func (f *Frontend) Run(ctx context.Context) error {
	ln, err := Listen(ctx, f.bind)
	if err != nil {
		if ctx.Err() != nil {
			err = nil
		} else {
			f.stopErr.Store(&err)
		}
		f.forceCancel()
		close(f.closed)
		return err
	}
	return f.Serve(ctx, ln)
}

// Serve serves on ln, which it owns from now on, like Run. Binding first
// and serving then lets a reload find out that an address is taken before
// it changes anything.
func (f *Frontend) Serve(ctx context.Context, ln net.Listener) error {
	defer f.forceCancel()
	closeOnce := sync.OnceFunc(func() { close(f.closed) })
	defer closeOnce()
	actx, stopAccept := context.WithCancelCause(ctx)
	defer stopAccept(nil)
	f.mu.Lock()
	f.stopAccept = stopAccept
	f.mu.Unlock()
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		f.addr.Store(a)
	}
	// The parker is in place before Ready, so whoever waited for Ready
	// sees it.
	if pk, err := newParker(); err != nil {
		f.log.Warn("idle sessions will keep their goroutines", "err", err)
	} else {
		f.parker = pk
		go pk.run()
	}
	close(f.ready)
	f.log.Info("listening", "addr", ln.Addr().String(), "backend", f.pool.Load().Name())
	err := f.serve(ctx, actx, ln, closeOnce)
	// Every session has ended.
	f.pipes.close()
	if f.parker != nil {
		f.parker.stop()
	}
	return err
}

// errHandOver is the cause that ends an accept loop for HandOver.
var errHandOver = errors.New("listener handed over")

// HandOver stops accepting and returns the listener, still open and with
// its queued connections, for a frontend that replaces this one on the
// same address: no moment without a listener, no re-bind. Once it has
// returned, this frontend no longer counts as listening (Closed is closed,
// ListenErr says so); it drains its sessions as on stop, and its Run
// returns nil. It fails if the frontend is not serving.
func (f *Frontend) HandOver() (net.Listener, error) {
	f.mu.Lock()
	stop := f.stopAccept
	f.mu.Unlock()
	if stop == nil {
		return nil, fmt.Errorf("hand over the listener of frontend %s: not serving", f.name)
	}
	stop(errHandOver)
	// The accept loop puts the listener on handed (buffered) before it
	// closes f.closed; waiting for the latter means this frontend no
	// longer counts as listening (ListenErr, status) once HandOver returns.
	<-f.closed
	select {
	case ln := <-f.handed:
		return ln, nil
	default:
		// Closed for another reason first.
		return nil, fmt.Errorf("hand over the listener of frontend %s: it stopped listening", f.name)
	}
}

// ListenErr is nil while the frontend accepts connections, and otherwise
// says why not: not started yet, stopped, or the listener failed.
func (f *Frontend) ListenErr() error {
	select {
	case <-f.closed:
		if e := f.stopErr.Load(); e != nil {
			return *e
		}
		return errors.New("not listening: stopped")
	default:
	}
	select {
	case <-f.ready:
		return nil
	default:
		return errors.New("not listening yet")
	}
}

// Closed is closed once the listener is closed, handed over or never
// opened, before the drain: a replacement can bind the same address then.
func (f *Frontend) Closed() <-chan struct{} { return f.closed }

// serve runs the accept loop on ln until actx ends, then closes ln, or
// hands it over, and drains. ctx is the frontend's life; actx ends with it
// or with a hand-over.
func (f *Frontend) serve(ctx, actx context.Context, ln net.Listener, closed func()) error {
	stop := context.AfterFunc(actx, func() {
		if errors.Is(context.Cause(actx), errHandOver) && ctx.Err() == nil {
			// A deadline in the past wakes Accept without closing.
			if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok && dl.SetDeadline(time.Unix(1, 0)) == nil {
				return
			}
		}
		_ = ln.Close()
	})
	err := f.acceptLoop(actx, ln)
	stop()
	if errors.Is(context.Cause(actx), errHandOver) && ctx.Err() == nil && f.release(ln) {
		err = nil
	} else {
		_ = ln.Close()
		if err != nil {
			f.stopErr.Store(&err)
		}
	}
	closed()
	f.drain()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// release passes ln to HandOver with its deadline cleared; false if it
// was closed meanwhile.
func (f *Frontend) release(ln net.Listener) bool {
	dl, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok || dl.SetDeadline(time.Time{}) != nil {
		return false
	}
	f.handed <- ln
	f.log.Info("listener handed over", "addr", ln.Addr().String())
	return true
}

func (f *Frontend) acceptLoop(ctx context.Context, ln net.Listener) error {
	backoff := time.Duration(0)
	for {
		f.pressure.wait(ctx)
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", f.bind, err)
			}
			// EMFILE, ENFILE, ENOBUFS and the like pass once
			// connections close; anything else is logged and retried
			// too, at the slowest pace, rather than taking the
			// frontend down.
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			if !temporary(err) {
				backoff = acceptBackoffMax
			}
			f.log.Warn("accept failed, backing off", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		f.admit(c)
	}
}

// temporary reports accept errors that clear up by themselves.
func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// admit applies maxconn and starts a session for c.
//
// When the frontend's or the global limit is reached the connection is
// accepted and reset at once (SO_LINGER 0) rather than left in the listen
// backlog: a client then fails fast and retries, possibly via another
// node, instead of hanging in a queue that will not move. The rejection
// is counted and logged.
func (f *Frontend) admit(c net.Conn) {
	if !acquireSlot(&f.current, f.maxConn.Load()) {
		f.reject(c)
		return
	}
	if !f.opts.Limit.acquire() {
		f.current.Add(-1)
		f.reject(c)
		return
	}
	f.total.Add(1)
	s := newSession(f, c)
	f.mu.Lock()
	f.sessions[s] = struct{}{}
	f.mu.Unlock()
	f.sessionsGen.Add(1)
	f.wg.Add(1)
	go s.serve(func() {
		f.mu.Lock()
		delete(f.sessions, s)
		f.mu.Unlock()
		f.sessionsGen.Add(1)
		f.current.Add(-1)
		f.opts.Limit.release()
		f.wg.Done()
	})
}

func (f *Frontend) reject(c net.Conn) {
	f.rejected.Add(1)
	resetClose(c)
	f.logConn(connRecord{client: c.RemoteAddr(), end: "maxconn", backend: f.pool.Load().Name()})
}

// resetClose closes c with a TCP reset so the peer learns at once.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// drain waits for open sessions up to the drain grace, then closes what is
// left and waits for those sessions to notice.
func (f *Frontend) drain() {
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	if n := f.current.Load(); n > 0 {
		f.log.Info("draining", "open", n, "grace", f.Timeouts().Drain)
	}
	if grace := f.Timeouts().Drain; grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	f.forceCancel()
	f.mu.Lock()
	left := make([]*session, 0, len(f.sessions))
	for s := range f.sessions {
		left = append(left, s)
	}
	f.mu.Unlock()
	if len(left) > 0 {
		f.log.Info("drain grace over, closing open sessions", "open", len(left))
	}
	for _, s := range left {
		s.closeWith("drained")
	}
	<-done
}
