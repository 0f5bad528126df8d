package health

import "time"

// Failure says what a failed probe learnt about the server, which decides
// what happens to the server's open sessions.
type Failure uint8

// Kinds of failure. The zero value is Gone, so a failure nobody classified
// keeps the conservative meaning it always had.
const (
	// Gone: nothing answered (refused, reset, timed out, unreachable) or
	// what answered cannot serve; open sessions are closed (close_on_down).
	Gone Failure = iota
	// NotReady: the server answered and says it should get no new traffic
	// (e.g. /readyz failing during a graceful shutdown); open sessions are
	// left to finish.
	NotReady
	// Rejected: the server answered but refused the check's credentials
	// (HTTP 401/403, a TLS certificate alert). It is a misconfigured check,
	// not a dead server; open sessions are left alone.
	Rejected
)

// String names the failure for logs, status and metrics.
func (f Failure) String() string {
	switch f {
	case Gone:
		return "gone"
	case NotReady:
		return "not_ready"
	case Rejected:
		return "rejected"
	}
	return "unknown"
}

// Result is the outcome of one probe of one server.
type Result struct {
	OK      bool
	Reason  string  // why it failed, or a short success note ("200 OK", "handshake ok")
	Failure Failure // what kind of failure, when !OK
	Latency time.Duration
	At      time.Time
	// Inconclusive means the probe could not run for lack of local
	// resources (see LocalExhaustion), or its timeout was noticed so late
	// that this node, not the server, was stalled (Stalled): the runner
	// drops the result, so a host short of descriptors or of CPU does not
	// mark healthy servers down.
	Inconclusive bool
	Stalled      bool
	// TimedOut means nothing answered within the timeout; only such a
	// failure, noticed late, is put down to this node's stall.
	TimedOut bool
}

// Target receives probe results; backend servers implement it.
// ReportCheck must not block: the runner calls it on its own goroutine.
type Target interface {
	ReportCheck(Result)
}

// Tracker applies rise and fall to a sequence of results. Until the first
// result the state is unknown; the first result decides at once, so a fresh
// daemon serves within one interval instead of waiting for rise probes.
// Tracker is not safe for concurrent use; its owner locks.
type Tracker struct {
	rise, fall int
	known      bool
	up         bool
	succ, fail int
}

// NewTracker returns a tracker needing rise successes to go up and fall
// failures to go down. Values below 1 are treated as 1.
func NewTracker(rise, fall int) Tracker {
	return Tracker{rise: max(rise, 1), fall: max(fall, 1)}
}

// Up reports the current state; false while unknown.
func (t *Tracker) Up() bool { return t.up }

// Known reports whether any result has been observed.
func (t *Tracker) Known() bool { return t.known }

// Observe records one probe outcome and reports whether the state changed
// (the first observation always counts as a change).
func (t *Tracker) Observe(ok bool) (changed bool) {
	if !t.known {
		t.known, t.up = true, ok
		t.succ, t.fail = 0, 0
		return true
	}
	if ok {
		t.succ, t.fail = t.succ+1, 0
		if !t.up && t.succ >= t.rise {
			t.up, t.succ = true, 0
			return true
		}
		return false
	}
	t.fail, t.succ = t.fail+1, 0
	if t.up && t.fail >= t.fall {
		t.up, t.fail = false, 0
		return true
	}
	return false
}

// ConfirmedDown reports whether the server is down and the last fall
// results in a row failed: the checks themselves say it is down, also
// when ForceDown took it down before they did.
func (t *Tracker) ConfirmedDown() bool { return t.known && !t.up && t.fail >= t.fall }

// ForceDown marks the server down at once, as after a refused connect
// (passive health). It then needs rise successes to come back.
func (t *Tracker) ForceDown() (changed bool) {
	changed = !t.known || t.up
	t.known, t.up = true, false
	t.succ, t.fail = 0, 0
	return changed
}

// SetLimits changes rise and fall, as after a config reload, keeping the
// current state and counts.
func (t *Tracker) SetLimits(rise, fall int) {
	t.rise, t.fall = max(rise, 1), max(fall, 1)
}
