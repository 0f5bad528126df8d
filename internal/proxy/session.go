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

	"halb/internal/health"
	"halb/internal/pool"
)

// session is one client connection and, once connected, its server
// connection.
type session struct {
	f      *Frontend
	pool   *pool.Pool // the frontend's backend when the session started
	client net.Conn
	start  time.Time

	mu      sync.Mutex
	server  net.Conn
	closed  bool
	reason  string // how the session ended; first decisive event wins
	halfEOF bool   // reason is only an EOF, which a later timeout or close overrides
	copying bool   // pumps are set up

	// The copy state lives in the session, one allocation for the
	// whole session instead of one per direction and closure.
	pumps       [2]pump // dirUp (client to server), dirDown
	left        atomic.Int32
	srv         *pool.Server
	connectTime time.Duration
	release     func() // stops tracking the session on srv
	done        func() // the frontend forgets the session
}

// Directions of a session, indexes into session.pumps.
const (
	dirUp   = 0 // client to server
	dirDown = 1 // server to client
)

func newSession(f *Frontend, c net.Conn) *session {
	return &session{f: f, pool: f.pool.Load(), client: c, start: time.Now()}
}

// connRecord is what the connection log line says.
type connRecord struct {
	client   net.Addr
	server   *pool.Server
	connect  time.Duration
	duration time.Duration
	in, out  int64
	end      string
	backend  string // "" before a session picked its backend (maxconn)
}

// Close ends the session because its server went down; pool.Server calls
// it for close-on-down.
func (s *session) Close() error {
	s.closeWith("server down")
	return nil
}

// closeWith records why the session ends (unless reason is empty) and
// closes both sockets, which unblocks both copy directions.
func (s *session) closeWith(reason string) {
	s.mu.Lock()
	s.setReasonLocked(reason, false)
	s.closed = true
	server := s.server
	copying := s.copying
	s.mu.Unlock()
	_ = s.client.Close()
	if server != nil {
		_ = server.Close()
	}
	// A parked direction has no goroutine to notice the close.
	if copying {
		s.pumps[dirUp].wake()
		s.pumps[dirDown].wake()
	}
}

// halfClosed records a direction ending in EOF, unless something already
// explains the end.
func (s *session) halfClosed(reason string) {
	s.mu.Lock()
	s.setReasonLocked(reason, true)
	s.mu.Unlock()
}

func (s *session) setReasonLocked(reason string, eof bool) {
	if reason == "" {
		return
	}
	if s.reason == "" || (s.halfEOF && !eof) {
		s.reason, s.halfEOF = reason, eof
	}
}

// attach records the server connection; false if the session was closed
// meanwhile (drain), and then the caller must close conn.
func (s *session) attach(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.server = conn
	return true
}

func (s *session) endReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// serve connects the session and starts its two copy directions, then
// returns; the direction that ends last logs the session and calls done.
// The goroutine that dialled (a deep call, a grown stack) thus ends, and
// an idle session is two parked goroutines with small stacks.
func (s *session) serve(done func()) {
	server, srv, connectTime, failure := s.connect()
	if server == nil {
		resetClose(s.client)
		s.f.logConn(connRecord{client: s.client.RemoteAddr(), server: srv, connect: connectTime,
			end: failure, duration: time.Since(s.start), backend: s.pool.Name()})
		done()
		return
	}
	if err := setKeepAlive(s.client, s.f.Timeouts().KeepAlive); err != nil {
		// Only the dead-peer probes are lost; the idle timeout still applies.
		s.f.log.Debug("keep-alive not set", "err", err)
	}
	s.relay(server, srv, connectTime, done)
}

// connect picks a server and dials it. A failed connect is reported to the
// pool, which may mark the server down (passive health: at once when
// refused, after a few failures in a row otherwise), and the next server is
// tried, up to the backend's retries and at most once per server, so a dead
// server costs the client one connect attempt, not a failed session.
func (s *session) connect() (net.Conn, *pool.Server, time.Duration, string) {
	f := s.f
	client := clientAddr(s.client)
	attempts := s.pool.Attempts()
	to := f.Timeouts()
	var tried []*pool.Server
	var last *pool.Server
	for i := range attempts {
		srv := s.pool.Pick(client, tried)
		if srv == nil {
			break
		}
		last = srv
		t0 := time.Now()
		attempt := srv.StartConnect()
		conn, err := f.dial(srv.Address(), &to)
		took := time.Since(t0)
		if err == nil {
			attempt.Succeeded()
			if i > 0 {
				srv.AddRetry()
			}
			if !s.attach(conn) {
				_ = conn.Close()
				return nil, srv, took, s.endReason()
			}
			return conn, srv, took, ""
		}
		if f.force.Err() != nil {
			attempt.Failed(pool.ConnectLocal, "drained")
			return nil, srv, took, "drained"
		}
		reason := dialFailure(err, to.Connect)
		kind := connectFailure(err)
		attempt.Failed(kind, reason)
		if kind == pool.ConnectLocal {
			// Not the server's fault, and every server would fail alike.
			pause := f.pressure.note(time.Now())
			f.log.Warn("connect failed: this host is out of resources, pausing accepts", "backend", s.pool.Name(), "server", srv.Name(), "err", reason, "pause", pause)
			return nil, srv, took, reason
		}
		f.log.Debug("connect failed, trying next server", "backend", s.pool.Name(), "server", srv.Name(), "err", reason)
		tried = append(tried, srv)
	}
	if last == nil {
		return nil, nil, 0, "no healthy server"
	}
	return nil, last, 0, "connect failed"
}

// dialContext bounds one connect attempt; timeout <= 0 leaves it to the
// kernel's own SYN retries.
func dialContext(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, timeout)
}

// connectFailure classifies a connect error for passive health: only a
// reset from the server's kernel says for sure that nothing listens; a
// timeout may be the server or a moment of overload, here or there; and
// errors that say this host ran out of something are not the server's.
func connectFailure(err error) pool.ConnectFailure {
	var ne net.Error
	switch {
	case health.LocalExhaustion(err):
		return pool.ConnectLocal
	case errors.Is(err, syscall.ECONNREFUSED):
		return pool.ConnectRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
		return pool.ConnectTimeout
	default:
		return pool.ConnectError
	}
}

// dialFailure names a connect error briefly for logs and server state.
func dialFailure(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect: connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("connect: timeout after %s", timeout)
	default:
		return fmt.Sprintf("connect: %v", err)
	}
}

func clientAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// relay copies both ways, each direction in a goroutine of its own (or
// parked, while cold). When both are done it closes both sockets, logs
// the session and calls done.
func (s *session) relay(server net.Conn, srv *pool.Server, connectTime time.Duration, done func()) {
	s.srv, s.connectTime, s.release, s.done = srv, connectTime, srv.Track(s), done
	s.left.Store(2)
	to := s.f.Timeouts()
	s.mu.Lock()
	s.pumps[dirUp].init(s, dirUp, server, s.client, to.ClientIdle)
	s.pumps[dirDown].init(s, dirDown, s.client, server, to.ServerIdle)
	s.shareRawConns(server)
	s.copying = true
	s.mu.Unlock()
	go s.pumps[dirDown].start()
	go s.pumps[dirUp].start()
}

// shareRawConns gives both directions the same raw conn of each socket,
// two allocations instead of four; a direction whose conns are not set
// makes its own.
func (s *session) shareRawConns(server net.Conn) {
	cc, ok1 := s.client.(*net.TCPConn)
	sc, ok2 := server.(*net.TCPConn)
	if !ok1 || !ok2 {
		return
	}
	crc, err1 := cc.SyscallConn()
	src, err2 := sc.SyscallConn()
	if err1 != nil || err2 != nil {
		return
	}
	s.pumps[dirUp].rc, s.pumps[dirUp].wc = crc, src
	s.pumps[dirDown].rc, s.pumps[dirDown].wc = src, crc
}

// moved counts bytes one direction passed on.
func (s *session) moved(dir int, b int64) {
	if dir == dirUp {
		s.f.bytesIn.Add(b)
		s.srv.AddBytes(b, 0)
	} else {
		s.f.bytesOut.Add(b)
		s.srv.AddBytes(0, b)
	}
}

// directionDone handles the end of one direction; the second to end
// closes the session, logs it and calls done.
func (s *session) directionDone(dir int, e copyEnd, err error) {
	if dir == dirUp {
		s.finish(e, err, s.pumps[dirUp].dst, s.pumps[dirUp].wc, "client", "server")
	} else {
		s.finish(e, err, s.client, s.pumps[dirDown].wc, "server", "client")
	}
	if s.left.Add(-1) > 0 {
		return
	}
	s.closeWith("")
	s.release()
	s.f.logConn(connRecord{client: s.client.RemoteAddr(), server: s.srv, connect: s.connectTime,
		in: s.pumps[dirUp].total, out: s.pumps[dirDown].total, end: s.endReason(),
		duration: time.Since(s.start), backend: s.pool.Name()})
	s.done()
}

// finish handles the end of one direction: EOF is passed on as a
// half-close so the other direction keeps flowing; a timeout or error
// ends the whole session. dstRaw is dst's raw conn, nil if it has none.
func (s *session) finish(end copyEnd, err error, dst net.Conn, dstRaw syscall.RawConn, from, to string) {
	switch end {
	case endEOF:
		s.halfClosed(from + " closed")
		if err := closeWrite(dst, dstRaw); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeWith(fmt.Sprintf("half-close %s: %v", to, err))
		}
	case endIdle:
		s.closeWith(from + " idle timeout")
	default:
		s.closeWith(copyFailure(err, from, to))
	}
}

// copyFailure names a copy error by the direction and the kernel's word
// for it ("client to server: connection reset by peer"). Errors on a
// socket the session already closed are consequences; the reason recorded
// first stays.
func copyFailure(err error, from, to string) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.As(err, &errno):
		return fmt.Sprintf("%s to %s: %v", from, to, errno)
	default:
		return fmt.Sprintf("%s to %s: %v", from, to, err)
	}
}

func (f *Frontend) logConn(r connRecord) {
	level := slog.LevelDebug
	if f.opts.ConnLog {
		level = slog.LevelInfo
	}
	ctx := context.Background()
	if !f.log.Enabled(ctx, level) {
		return
	}
	client, server := "", ""
	if r.client != nil {
		client = r.client.String()
	}
	if r.server != nil {
		server = r.server.Name()
	}
	f.log.LogAttrs(ctx, level, "connection",
		slog.String("client", client),
		slog.String("backend", r.backend),
		slog.String("server", server),
		slog.Float64("connect_ms", float64(r.connect.Microseconds())/1000),
		slog.Duration("duration", r.duration),
		slog.Int64("bytes_in", r.in),
		slog.Int64("bytes_out", r.out),
		slog.String("end", r.end),
	)
}
