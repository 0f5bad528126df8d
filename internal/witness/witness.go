package witness

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"halb/internal/health"
)

// Defaults for zero Options fields: three lost echoes at 500ms notice a
// cut-off node in about 1.5s, well before a peer would take the VIP over.
const (
	DefaultInterval = 500 * time.Millisecond
	DefaultTimeout  = 400 * time.Millisecond
	DefaultFall     = 3
	DefaultRise     = 2
)

// Options tune a Witness. Zero fields take the defaults above.
type Options struct {
	// Interval is the time from the start of one probe to the start of the
	// next.
	Interval time.Duration
	// Timeout bounds one probe; it is cut to Interval if longer, so probes
	// keep their rhythm.
	Timeout time.Duration
	// Fall is how many failed probes in a row make a reachable witness
	// unreachable; Rise how many replies in a row make it reachable again.
	Fall, Rise int
	// Clock schedules probes; nil means the wall clock. Tests pass a
	// healthtest.Clock.
	Clock health.Clock
}

// Witness probes one address on a schedule and tracks, with rise and fall,
// whether it is reachable. It is safe for concurrent use.
type Witness struct {
	target   netip.Addr
	prober   Prober
	interval time.Duration
	timeout  time.Duration
	clock    health.Clock
	log      *slog.Logger
	changed  chan struct{}

	mu      sync.Mutex
	tracker health.Tracker
}

// New returns a witness probing target with p. It does no I/O; call Run.
// A nil log discards.
func New(target netip.Addr, p Prober, opts Options, log *slog.Logger) *Witness {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	opts.Timeout = min(opts.Timeout, opts.Interval)
	if opts.Fall <= 0 {
		opts.Fall = DefaultFall
	}
	if opts.Rise <= 0 {
		opts.Rise = DefaultRise
	}
	if opts.Clock == nil {
		opts.Clock = health.RealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Witness{
		target:   target,
		prober:   p,
		interval: opts.Interval,
		timeout:  opts.Timeout,
		clock:    opts.Clock,
		log:      log.With("component", "witness", "target", target.String()),
		changed:  make(chan struct{}, 1),
		tracker:  health.NewTracker(opts.Rise, opts.Fall),
	}
}

// Target returns the probed address.
func (w *Witness) Target() netip.Addr { return w.target }

// Reachable reports whether the witness currently counts as reachable. It
// is false until the first reply: a node that has not yet heard from the
// witness must not claim the VIP on its account.
func (w *Witness) Reachable() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tracker.Up()
}

// Known reports whether any probe has completed, so a caller can tell
// "not probed yet" from "unreachable".
func (w *Witness) Known() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tracker.Known()
}

// Changed delivers a signal after the state changes (including the first
// result). Signals are coalesced: several changes between two reads give
// one signal, so read Reachable after each.
func (w *Witness) Changed() <-chan struct{} { return w.changed }

// Run probes at once, so the first result decides within one probe of
// start, then every interval counted from the start of the previous probe.
// It returns nil when ctx is cancelled; a probe cut short by that is not
// counted.
func (w *Witness) Run(ctx context.Context) error {
	for {
		start := w.clock.Now()
		w.probe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := w.interval - w.clock.Now().Sub(start)
		t := w.clock.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

func (w *Witness) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, w.timeout)
	err := w.prober.Probe(pctx, w.target)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		w.log.Debug("witness probe failed", "err", err)
	}
	w.mu.Lock()
	changed := w.tracker.Observe(err == nil)
	up := w.tracker.Up()
	w.mu.Unlock()
	if !changed {
		return
	}
	if up {
		w.log.Info("witness reachable")
	} else {
		w.log.Info("witness unreachable", "err", err)
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
}
