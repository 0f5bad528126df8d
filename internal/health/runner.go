package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

	"halb/internal/config"
)

// defaultInterval applies when a runner is built without an interval; the
// config package fills real values, this only keeps the loop from spinning.
const defaultInterval = 2 * time.Second

// Runner probes one server on a schedule and reports every result to its
// target.
type Runner struct {
	checker  Checker
	addr     netip.AddrPort
	interval time.Duration
	timeout  time.Duration
	jitter   float64
	target   Target
	clock    Clock
	log      *slog.Logger
	rng      *rand.Rand
}

// NewRunner returns a runner probing addr with c, every hc.Interval plus a
// random share of hc.Jitter*hc.Interval, each probe bounded by hc.Timeout.
// A nil clock means the wall clock; a nil log discards. log should already
// carry the backend and server name; the runner adds the server address.
func NewRunner(c Checker, addr netip.AddrPort, hc config.HealthCheck, target Target, clock Clock, log *slog.Logger) *Runner {
	if clock == nil {
		clock = RealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval := hc.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = interval
	}
	jitter := hc.Jitter
	if !(jitter > 0) { // also catches NaN
		jitter = 0
	}
	return &Runner{
		checker:  c,
		addr:     addr,
		interval: interval,
		timeout:  timeout,
		jitter:   jitter,
		target:   target,
		clock:    clock,
		log:      log,
		// Seeded per runner so that runners of many servers, and the same
		// server on several LB hosts, spread their probes independently.
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// WithRand replaces the jitter source, for reproducible schedules in tests.
// Call it before Run.
func (r *Runner) WithRand(rng *rand.Rand) *Runner {
	r.rng = rng
	return r
}

// Run probes at once, so that the first result decides the server's state
// within one probe of start, then after every interval plus jitter,
// counted from the end of the previous probe so probes never overlap. It
// returns nil when ctx is cancelled; a probe cut short by that is not
// reported.
func (r *Runner) Run(ctx context.Context) error {
	for {
		r.probe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		t := r.clock.NewTimer(r.wait())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// wait returns the pause before the next probe.
func (r *Runner) wait() time.Duration {
	d := r.interval
	if span := int64(r.jitter * float64(r.interval)); span > 0 {
		d += time.Duration(r.rng.Int64N(span))
	}
	return d
}

func (r *Runner) probe(ctx context.Context) {
	at := r.clock.Now()
	res := Probe(ctx, r.checker, r.addr, r.timeout)
	if ctx.Err() != nil {
		return
	}
	// At comes from the runner's clock so that results line up with the
	// schedule (and with a fake clock in tests).
	res.At = at
	if res.Stalled {
		// Starved of CPU, this node would say so for every check: the
		// heartbeat and the proxy feel it too; one line each is noise.
		r.log.Debug("health check timed out while this node was stalled; the server keeps its state", "address", r.addr.String(), "reason", res.Reason)
		return
	}
	if res.Inconclusive {
		r.log.Warn("health check could not run: this host is out of resources; the server keeps its state", "address", r.addr.String(), "reason", res.Reason)
		return
	}
	if !res.OK {
		r.log.Debug("health check failed", "address", r.addr.String(), "failure", res.Failure.String(), "reason", res.Reason, "latency", res.Latency)
	}
	r.target.ReportCheck(res)
}

// Probe runs one check of addr bounded by timeout, as the runner does
// every interval; `halb check --probe` uses it to run each check once.
func Probe(ctx context.Context, c Checker, addr netip.AddrPort, timeout time.Duration) Result {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := c.Check(pctx, addr)
	expired := errors.Is(pctx.Err(), context.DeadlineExceeded)
	if !res.OK {
		switch {
		case expired && !res.TimedOut:
			// The checker gave up because of our deadline; say so plainly:
			// a server that does not answer in time is gone, whatever the
			// checker made of the cut-short probe.
			res.Reason = "timeout after " + timeout.String()
			res.Failure, res.TimedOut = Gone, true
		case res.Reason == "":
			res.Reason = "check failed"
		}
		if late := res.Latency - timeout; res.TimedOut && late > stallSlack(timeout) {
			res.Inconclusive, res.Stalled = true, true
			res.Reason += fmt.Sprintf(" (noticed %s late: this node was stalled, not the server)", late.Round(time.Millisecond))
		}
	}
	return res
}

// stallSlack is how late a check's timeout may be noticed and still be
// the server's fault. Later than that, this node was not running (starved
// of CPU): the timer fired long after the deadline, and the answer may
// be waiting unread in the socket — Go's poller reports the deadline
// without reading again. Counting such timeouts marked every server down
// on a node of the soak at load 20 and moved the VIP for nothing.
func stallSlack(timeout time.Duration) time.Duration {
	return max(100*time.Millisecond, timeout/4)
}
