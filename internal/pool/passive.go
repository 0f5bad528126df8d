package pool

import (
	"fmt"
	"time"

	"halb/internal/config"
	"halb/internal/health"
)

// Passive health: what a failed connect of the proxy says about a server.
//
// A refused connect is the server's kernel answering with a reset: nothing
// listens on the port, and the server goes down at once. Any other failure
// (a timeout, no route) is counted, and passive_fall counted failures in a
// row take the server down; a successful connect resets the count. A
// failure is not counted when it says more about the moment than about the
// server:
//
//   - another connect to the same server succeeded while this one was
//     pending: the server lives, this connect lost a race for a full SYN
//     or accept queue;
//   - a timeout while BusyConnects or more connects to the backend's
//     other servers were in flight, when it began or when it timed out:
//     connects pile up everywhere, so this host or the network, not the
//     server, is the likely bottleneck (a reconnect storm after a
//     failover), and a timeout then says nothing about the server.
//
// Only connects to other servers make a backend busy: connects to a dead
// server pile up until they time out, and they must not excuse it. So a
// dead server is still taken out after passive_fall timeouts, while the
// other servers answer; if every server times out under a storm, the
// checks decide.

// BusyConnects is how many connects to a backend's other servers in flight
// at once make a timeout not count against a server. Connects to healthy
// servers on a LAN take well under a millisecond, so even thousands of
// connections a second keep only a few in flight; this many means a burst.
const BusyConnects = 32

// ConnectFailure classifies a failed connect for passive health.
type ConnectFailure uint8

// Kinds of failed connects.
const (
	// ConnectRefused: the server's kernel answered with a reset; nothing
	// listens on the port.
	ConnectRefused ConnectFailure = iota + 1
	// ConnectTimeout: no answer within timeouts.connect. The server or its
	// network may be gone, its SYN backlog full, or this host too busy.
	ConnectTimeout
	// ConnectError: any other error from the network, e.g. no route.
	ConnectError
	// ConnectLocal: this host failed (out of files, ports or buffers) or
	// gave the connect up (drain). It says nothing about the server.
	ConnectLocal
)

// String names the kind for logs.
func (k ConnectFailure) String() string {
	switch k {
	case ConnectRefused:
		return "refused"
	case ConnectTimeout:
		return "timeout"
	case ConnectError:
		return "error"
	case ConnectLocal:
		return "local"
	default:
		return fmt.Sprintf("ConnectFailure(%d)", uint8(k))
	}
}

// failedConnect is what one failed connect was, in plain values.
type failedConnect struct {
	kind ConnectFailure
	// busy: BusyConnects or more connects to the backend's other servers
	// were in flight when this one began or when it failed.
	busy bool
	// answeredSince: another connect to the server succeeded while this
	// one was pending.
	answeredSince bool
}

// passiveVerdict decides what a failed connect does to its server, given
// the counted failures in a row before it and the backend's passive_fall.
// It returns the new count, whether this failure counted, and whether the
// server goes down. See the package comment above for the rule.
func passiveVerdict(f failedConnect, run, limit int) (newRun int, counted, down bool) {
	switch {
	case f.kind == ConnectRefused:
		return run + 1, true, true
	case f.kind == ConnectLocal, f.answeredSince:
		return run, false, false
	case f.kind == ConnectTimeout && f.busy:
		return run, false, false
	}
	run++
	return run, true, run >= max(limit, 1)
}

// Connect is one connect attempt to a server, from StartConnect until the
// caller reports how it ended with one call of Succeeded or Failed; a
// further call does nothing.
type Connect struct {
	s      *Server
	okSeq  uint64 // the server's successful connects when this one began
	busy   bool
	active bool
}

// StartConnect notes that the proxy begins a connect to s.
func (s *Server) StartConnect() Connect {
	own := s.connecting.Add(1)
	all := s.pool.connecting.Add(1)
	return Connect{s: s, okSeq: s.connectOK.Load(), busy: all-own >= BusyConnects, active: true}
}

// othersBusy reports whether BusyConnects or more connects to the
// backend's servers other than s are in flight.
func (s *Server) othersBusy() bool {
	return s.pool.connecting.Load()-s.connecting.Load() >= BusyConnects
}

// Succeeded reports that the connect was established: the server lives,
// and its count of failed connects starts again.
func (c *Connect) Succeeded() {
	if !c.end() {
		return
	}
	c.s.connectOK.Add(1)
	c.s.mu.Lock()
	c.s.failRun = 0
	c.s.mu.Unlock()
}

// Failed reports a failed connect of the given kind; reason says what
// happened ("connect: timeout after 2s") and goes into the log when the
// server goes down. A failure that counts may mark the server down.
func (c *Connect) Failed(kind ConnectFailure, reason string) {
	if !c.active {
		return
	}
	s := c.s
	busy := c.busy || s.othersBusy()
	c.end()
	if kind == ConnectLocal {
		return
	}
	s.connectFailures.Add(1)
	f := failedConnect{kind: kind, busy: busy, answeredSince: s.connectOK.Load() != c.okSeq}
	limit := int(s.pool.passiveFall.Load())
	if limit <= 0 {
		limit = config.DefaultPassiveFall // a Backend built in code, not loaded
	}
	s.mu.Lock()
	run, counted, down := passiveVerdict(f, s.failRun, limit)
	if down {
		// Marked down, the server must fail passive_fall times again
		// after checks bring it back.
		run = 0
	}
	s.failRun = run
	s.mu.Unlock()
	if !counted {
		s.pool.log.Debug("connect failed, not counted against the server", "server", s.name, "reason", reason,
			"busy", f.busy, "answered_since", f.answeredSince)
		return
	}
	if down {
		if kind != ConnectRefused && limit > 1 {
			reason = fmt.Sprintf("%s (%d failed connects in a row)", reason, limit)
		}
		s.MarkDown(reason)
	}
}

// end takes the attempt out of the backend's connects in flight, once.
func (c *Connect) end() bool {
	if !c.active {
		return false
	}
	c.active = false
	c.s.connecting.Add(-1)
	c.s.pool.connecting.Add(-1)
	return true
}

// MarkDown takes the server down at once (passive health): after a refused
// connect, or passive_fall counted failures in a row (Connect.Failed). It
// needs rise successful checks to come back. Open sessions are left alone:
// a failed new connection says little about existing ones.
func (s *Server) MarkDown(reason string) {
	s.mu.Lock()
	changed := s.tracker.ForceDown()
	s.known.Store(true)
	// A failed connect says the server is gone now, whatever the last
	// check said; panic routing then tries servers that answer first.
	s.lastFailure.Store(uint32(health.Gone))
	if changed {
		now := time.Now()
		s.bookChangeLocked(false, now)
		s.up.Store(false)
		s.since = now
	}
	s.mu.Unlock()
	if !changed {
		return
	}
	s.pool.log.Info("server down", "server", s.name, "reason", reason, "closed_sessions", 0)
	s.pool.notify()
	s.observe(false, reason)
}
