package pool

import (
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"halb/internal/config"
	"halb/internal/health"
)

// AdminState is an operator's setting for a server, independent of health.
type AdminState int32

// Admin states. Disabled and Drain both stop new connections and leave
// open ones alone; they differ in intent, which stats show: Drain is "let
// my sessions finish, I am going away", Disabled is "out of service".
const (
	Enabled AdminState = iota
	Disabled
	Drain
)

// String returns the state's name as used in the admin API.
func (a AdminState) String() string {
	switch a {
	case Enabled:
		return "enabled"
	case Disabled:
		return "disabled"
	case Drain:
		return "drain"
	default:
		return fmt.Sprintf("AdminState(%d)", int32(a))
	}
}

// MarshalText encodes the state by name.
func (a AdminState) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText decodes a state name.
func (a *AdminState) UnmarshalText(b []byte) error {
	s, err := ParseAdminState(string(b))
	if err != nil {
		return err
	}
	*a = s
	return nil
}

// ParseAdminState returns the state called name.
func ParseAdminState(name string) (AdminState, error) {
	switch name {
	case "enabled":
		return Enabled, nil
	case "disabled":
		return Disabled, nil
	case "drain":
		return Drain, nil
	}
	return Enabled, fmt.Errorf("parse admin state %q: want enabled, disabled or drain", name)
}

// Server is one backend endpoint with its health, admin state and counters.
// It implements health.Target. All methods are safe for concurrent use.
type Server struct {
	pool   *Pool
	cfg    config.Server
	name   string
	addr   netip.AddrPort
	weight int
	backup bool
	seed   uint64

	// rrCurrent is the smooth round-robin running weight, guarded by pool.mu.
	rrCurrent int

	up    atomic.Bool // read on the Pick hot path without a lock
	admin atomic.Int32
	// known and lastFailure mirror the tracker and the last result for
	// panic routing, which reads them on the Pick path without s.mu.
	known       atomic.Bool
	lastFailure atomic.Uint32 // health.Failure of the last failed result

	mu      sync.Mutex // guards the fields below
	tracker health.Tracker
	fall    int // the backend's fall, for goneRun
	goneRun int // consecutive results that found the server gone
	failRun int // counted connect failures in a row (passive.go)
	since   time.Time
	last    health.Result
	conns   map[uint64]io.Closer
	nextID  uint64
	// Counters of the state history, HAProxy's Chk, Dwn and Dwntme:
	// failed checks, up→down transitions, and the length of the down
	// periods that ended (the current one runs from since).
	failedChecks    int64
	downTransitions int64
	downtime        time.Duration

	active          atomic.Int64
	total           atomic.Int64
	bytesIn         atomic.Int64
	bytesOut        atomic.Int64
	connectFailures atomic.Int64
	retries         atomic.Int64
	peak            atomic.Int64  // most connections open at once
	connectOK       atomic.Uint64 // successful connects, to tell a failure that lost a race (passive.go)
	connecting      atomic.Int64  // connects in flight to this server (passive.go)
}

func newServer(p *Pool, sc config.Server) *Server {
	return newServerFor(p, sc, p.cfg.Health)
}

func newServerFor(p *Pool, sc config.Server, hc config.HealthCheck) *Server {
	return &Server{
		pool:    p,
		cfg:     sc,
		name:    sc.Name,
		addr:    sc.Address,
		weight:  max(sc.Weight, 1),
		backup:  sc.Backup,
		seed:    serverSeed(sc),
		tracker: health.NewTracker(hc.Rise, hc.Fall),
		fall:    max(hc.Fall, 1),
		conns:   make(map[uint64]io.Closer),
	}
}

// Name returns the server's configured name.
func (s *Server) Name() string { return s.name }

// Config returns the server's configuration.
func (s *Server) Config() config.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// reconfigure takes a reloaded config for the same name and address,
// keeping the current health state.
func (s *Server) reconfigure(sc config.Server, hc config.HealthCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = sc
	s.tracker.SetLimits(hc.Rise, hc.Fall)
	s.fall = max(hc.Fall, 1)
}

// CloseConnections closes every open connection to the server, e.g. when
// a reload removed it and its grace period ran out; it returns how many.
func (s *Server) CloseConnections() int {
	s.mu.Lock()
	conns := s.takeConnsLocked()
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// Address returns the server's address.
func (s *Server) Address() netip.AddrPort { return s.addr }

// Backup reports whether the server is a backup.
func (s *Server) Backup() bool {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return s.backup
}

// Up reports whether health says the server is up. A server whose state is
// still unknown (no check result yet) is not up.
func (s *Server) Up() bool { return s.up.Load() }

// Admin returns the server's admin state.
func (s *Server) Admin() AdminState { return AdminState(s.admin.Load()) }

// usable reports whether the server may take a new connection.
func (s *Server) usable() bool {
	return s.up.Load() && AdminState(s.admin.Load()) == Enabled
}

// panicUsable reports whether the server may take a new connection while
// its backend is in panic: enabled, and down by a result, not unknown.
func (s *Server) panicUsable() bool {
	return s.known.Load() && !s.up.Load() && AdminState(s.admin.Load()) == Enabled
}

// answered reports whether the server's last failed check still got an
// answer from it (not ready, or credentials rejected): in panic such a
// server is tried before one that is gone.
func (s *Server) answered() bool {
	return health.Failure(s.lastFailure.Load()) != health.Gone
}

// SetAdmin changes the admin state. Open connections are never closed by
// it; Disabled and Drain only stop new ones.
func (s *Server) SetAdmin(state AdminState) {
	old := AdminState(s.admin.Swap(int32(state)))
	if old == state {
		return
	}
	s.pool.log.Info("server admin state changed", "server", s.name, "from", old.String(), "to", state.String())
	s.pool.notify()
}

// ReportCheck records one health-check result, applying the backend's
// rise and fall. It implements health.Target and never blocks for long:
// closing sessions on a down transition only closes sockets.
//
// What happens to open sessions depends on what the failure says about
// the server: only a server that is gone has them closed (close_on_down);
// one that answers but is not ready, or that rejects the check's
// credentials, keeps serving them while it gets no new ones (drain).
func (s *Server) ReportCheck(r health.Result) {
	s.mu.Lock()
	prev := s.last
	s.last = r
	changed := s.tracker.Observe(r.OK)
	up := s.tracker.Up()
	s.known.Store(true)
	if !r.OK {
		s.lastFailure.Store(uint32(r.Failure))
		s.failedChecks++
	}
	var doomed []io.Closer
	if changed {
		at := r.At
		if at.IsZero() {
			at = time.Now()
		}
		s.bookChangeLocked(up, at)
		s.up.Store(up)
		s.since = at
	}
	// Sessions go once fall checks in a row found the server gone, be it
	// on the down transition, after a passive MarkDown, or after a server
	// that was only not ready went away.
	if !r.OK && r.Failure == health.Gone {
		s.goneRun++
	} else {
		s.goneRun = 0
	}
	if !up && s.goneRun >= s.fall && s.pool.closeOnDown.Load() {
		doomed = s.takeConnsLocked()
	}
	// A down server whose failure changed kind (not ready -> gone, or a
	// check that starts being rejected) is logged once, not per check.
	kindChanged := !changed && !up && !r.OK && (prev.OK || prev.Failure != r.Failure)
	s.mu.Unlock()
	for _, c := range doomed {
		_ = c.Close()
	}
	if !changed {
		switch {
		case kindChanged:
			s.logFailure("server still down, check result changed", r, len(doomed))
		case len(doomed) > 0:
			s.pool.log.Info("server down confirmed by checks", "server", s.name, "reason", r.Reason, "closed_sessions", len(doomed))
		}
		return
	}
	if up {
		s.pool.log.Info("server up", "server", s.name, "reason", r.Reason)
	} else {
		s.logFailure("server down", r, len(doomed))
	}
	s.pool.notify()
	s.observe(up, r.Reason)
}

// logFailure logs a failed check that changed something. A rejected check
// is a warning: the server lives, halb's check is misconfigured.
func (s *Server) logFailure(msg string, r health.Result, closed int) {
	attrs := []any{"server", s.name, "check", r.Failure.String(), "reason", r.Reason, "closed_sessions", closed}
	switch r.Failure {
	case health.Rejected:
		s.pool.log.Warn(msg+": the server rejected the check's credentials", attrs...)
	case health.NotReady:
		s.pool.log.Info(msg+": not ready, open sessions may finish", attrs...)
	default:
		s.pool.log.Info(msg, attrs...)
	}
}

// bookChangeLocked counts a change of the health state to up at at, before
// it is applied: the end of a down period, or an up→down transition. The
// first result after start (since still zero) is neither.
func (s *Server) bookChangeLocked(up bool, at time.Time) {
	if s.since.IsZero() {
		return
	}
	switch wasUp := s.up.Load(); {
	case up && !wasUp:
		s.downtime += max(0, at.Sub(s.since))
	case !up && wasUp:
		s.downTransitions++
	}
}

// takeConnsLocked empties the set of tracked connections and returns them.
func (s *Server) takeConnsLocked() []io.Closer {
	if len(s.conns) == 0 {
		return nil
	}
	out := make([]io.Closer, 0, len(s.conns))
	for id, c := range s.conns {
		out = append(out, c)
		delete(s.conns, id)
	}
	return out
}

// Track registers an open connection to this server: it counts towards
// leastconn and is closed if checks take the server down while the
// backend has CloseOnDown. release unregisters it; calling it more than
// once is harmless.
func (s *Server) Track(c io.Closer) (release func()) {
	for n := s.active.Add(1); ; {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	s.total.Add(1)
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.conns[id] = c
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.active.Add(-1)
			s.mu.Lock()
			delete(s.conns, id)
			s.mu.Unlock()
		})
	}
}

// AddBytes adds to the byte counters: in flows from client to server, out
// from server to client.
func (s *Server) AddBytes(in, out int64) {
	if in != 0 {
		s.bytesIn.Add(in)
	}
	if out != 0 {
		s.bytesOut.Add(out)
	}
}

// AddConnectFailure counts a failed connect to this server.
func (s *Server) AddConnectFailure() { s.connectFailures.Add(1) }

// AddRetry counts a connection this server took after another server of
// the backend failed to connect.
func (s *Server) AddRetry() { s.retries.Add(1) }

// ServerStats is a snapshot of one server's state and counters.
type ServerStats struct {
	Name            string
	Address         netip.AddrPort
	Backup          bool
	Weight          int
	Up              bool
	Known           bool // false until the first check result or MarkDown
	Admin           AdminState
	Since           time.Time // when Up last changed; zero while unknown
	LastCheck       health.Result
	Active          int64
	Total           int64
	BytesIn         int64
	BytesOut        int64
	ConnectFailures int64
	Retries         int64
	PeakActive      int64 // most connections open at once since start
	FailedChecks    int64 // health checks that failed since start
	DownTransitions int64 // times health took the server from up to down
	// Downtime is the length of the down periods that ended; while the
	// server is down (Known and not Up) the current one runs from Since.
	Downtime time.Duration
}

// TotalDowntime is how long the server has been down by its health since
// start, as of now.
func (st ServerStats) TotalDowntime(now time.Time) time.Duration {
	d := st.Downtime
	if st.Known && !st.Up && !st.Since.IsZero() {
		d += max(0, now.Sub(st.Since))
	}
	return d
}

// Stats returns a snapshot of the server's state and counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	st := ServerStats{
		Known:           s.tracker.Known(),
		Since:           s.since,
		LastCheck:       s.last,
		FailedChecks:    s.failedChecks,
		DownTransitions: s.downTransitions,
		Downtime:        s.downtime,
	}
	s.mu.Unlock()
	st.Name, st.Address = s.name, s.addr
	s.pool.mu.Lock()
	st.Backup, st.Weight = s.backup, s.weight
	s.pool.mu.Unlock()
	st.Up = s.up.Load()
	st.Admin = s.Admin()
	st.Active = s.active.Load()
	st.Total = s.total.Load()
	st.BytesIn = s.bytesIn.Load()
	st.BytesOut = s.bytesOut.Load()
	st.ConnectFailures = s.connectFailures.Load()
	st.Retries = s.retries.Load()
	st.PeakActive = s.peak.Load()
	return st
}

var _ health.Target = (*Server)(nil)
