package health_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/health/healthtest"
	"halb/test/support"
)

// wait bounds every wait on the runner goroutine.
const wait = 5 * time.Second

// results is a health.Target recording what it is told.
type results chan health.Result

func (r results) ReportCheck(res health.Result) { r <- res }

func (r results) next(t *testing.T) health.Result {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(wait):
		t.Fatal("no result reported")
		return health.Result{}
	}
}

func (r results) none(t *testing.T) {
	t.Helper()
	select {
	case res := <-r:
		t.Fatalf("unexpected result %+v", res)
	default:
	}
}

// countingChecker succeeds and counts its calls.
type countingChecker struct{ n atomic.Int64 }

func (c *countingChecker) Check(context.Context, netip.AddrPort) health.Result {
	c.n.Add(1)
	return health.Result{OK: true, Reason: "fake ok"}
}

// testAddrText is where fake checkers pretend to probe; nothing is dialled.
const testAddrText = "127.0.0.9:6443"

// startRunner runs r until the test ends and checks Run returned nil.
func startRunner(t *testing.T, r *health.Runner) context.CancelFunc {
	t.Helper()
	k := support.Go(t, r.Run)
	return func() {
		if err := k.Stop(t); err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	}
}

func blockUntil(t *testing.T, c *healthtest.Clock, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := c.BlockUntil(ctx, n); err != nil {
		t.Fatalf("runner never waited on a timer: %v", err)
	}
}

func TestRunnerProbesAtOnceThenEveryInterval(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := healthtest.NewClock(start)
	chk := &countingChecker{}
	got := make(results, 10)
	hc := config.HealthCheck{Interval: 2 * time.Second, Timeout: time.Second}
	startRunner(t, health.NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))

	// The first probe needs no clock advance.
	first := got.next(t)
	if !first.OK || first.Reason != "fake ok" || !first.At.Equal(start) {
		t.Fatalf("first result %+v, want ok at %v", first, start)
	}
	for i := range 3 {
		blockUntil(t, clock, 1)
		clock.Advance(hc.Interval - time.Nanosecond)
		got.none(t)
		if n := chk.n.Load(); n != int64(i+1) {
			t.Fatalf("probes before interval elapsed: %d, want %d", n, i+1)
		}
		clock.Advance(time.Nanosecond)
		res := got.next(t)
		want := start.Add(time.Duration(i+1) * hc.Interval)
		if !res.At.Equal(want) {
			t.Fatalf("probe %d at %v, want %v", i+2, res.At, want)
		}
	}
}

func TestRunnerJitterStaysInBounds(t *testing.T) {
	const probes = 200
	hc := config.HealthCheck{Interval: 10 * time.Second, Timeout: time.Second, Jitter: 0.5}
	for _, seeded := range []bool{true, false} {
		name := "default source"
		if seeded {
			name = "injected source"
		}
		t.Run(name, func(t *testing.T) {
			clock := healthtest.NewClock(time.Unix(0, 0))
			got := make(results, 1)
			r := health.NewRunner(&countingChecker{}, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil)
			if seeded {
				r.WithRand(rand.New(rand.NewPCG(1, 2)))
			}
			startRunner(t, r)
			got.next(t)
			lo, hi := time.Duration(1<<62), time.Duration(0)
			for range probes {
				blockUntil(t, clock, 1)
				next, _ := clock.NextDeadline()
				d := next.Sub(clock.Now())
				if d < hc.Interval || d >= hc.Interval+hc.Interval/2 {
					t.Fatalf("wait %v outside [%v, %v)", d, hc.Interval, hc.Interval+hc.Interval/2)
				}
				lo, hi = min(lo, d), max(hi, d)
				clock.Advance(d)
				got.next(t)
			}
			// Uniform over 5s: 200 draws spread far more than 2s unless the
			// jitter is not applied at all.
			if hi-lo < 2*time.Second {
				t.Fatalf("waits spread only %v..%v; jitter not applied", lo, hi)
			}
		})
	}
}

func TestRunnerNoJitterIsExact(t *testing.T) {
	clock := healthtest.NewClock(time.Unix(0, 0))
	got := make(results, 1)
	hc := config.HealthCheck{Interval: 3 * time.Second, Timeout: time.Second}
	startRunner(t, health.NewRunner(&countingChecker{}, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))
	got.next(t)
	for range 20 {
		blockUntil(t, clock, 1)
		next, _ := clock.NextDeadline()
		if d := next.Sub(clock.Now()); d != hc.Interval {
			t.Fatalf("wait %v, want exactly %v", d, hc.Interval)
		}
		clock.Advance(hc.Interval)
		got.next(t)
	}
}

func TestRunnerTimeoutFailsProbe(t *testing.T) {
	clock := healthtest.NewClock(time.Unix(0, 0))
	got := make(results, 1)
	hc := config.HealthCheck{Interval: time.Second, Timeout: 50 * time.Millisecond}
	deadlines := make(chan time.Duration, 1)
	blocking := health.CheckerFunc(func(ctx context.Context, _ netip.AddrPort) health.Result {
		dl, ok := ctx.Deadline()
		if !ok {
			deadlines <- -1
		} else {
			deadlines <- time.Until(dl)
		}
		<-ctx.Done()
		return health.Result{OK: false, Reason: ctx.Err().Error()}
	})
	var logs support.Log
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	startRunner(t, health.NewRunner(blocking, netip.MustParseAddrPort(testAddrText), hc, got, clock, log))

	select {
	case d := <-deadlines:
		if d <= 0 || d > hc.Timeout {
			t.Fatalf("probe deadline %v from start, want within (0, %v]", d, hc.Timeout)
		}
	case <-time.After(wait):
		t.Fatal("probe never started")
	}
	res := got.next(t)
	if res.OK || res.Reason != "timeout after 50ms" {
		t.Fatalf("result %+v, want failure with reason %q", res, "timeout after 50ms")
	}
	// The failure is logged at debug with the server address.
	blockUntil(t, clock, 1)
	line := logs.String()
	if !strings.Contains(line, "address="+testAddrText) || !strings.Contains(line, "timeout after 50ms") {
		t.Fatalf("debug log %q lacks server address or reason", line)
	}
}

func TestRunnerKeepsCheckerTimeoutReason(t *testing.T) {
	clock := healthtest.NewClock(time.Unix(0, 0))
	got := make(results, 1)
	hc := config.HealthCheck{Interval: time.Second, Timeout: 20 * time.Millisecond}
	chk := health.CheckerFunc(func(ctx context.Context, _ netip.AddrPort) health.Result {
		<-ctx.Done()
		return health.Result{Reason: "tls handshake: timeout after 20ms", TimedOut: true}
	})
	startRunner(t, health.NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))
	if res := got.next(t); res.Reason != "tls handshake: timeout after 20ms" {
		t.Fatalf("reason %q, want the checker's own timeout reason", res.Reason)
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	t.Run("while waiting", func(t *testing.T) {
		clock := healthtest.NewClock(time.Unix(0, 0))
		got := make(results, 1)
		hc := config.HealthCheck{Interval: time.Second, Timeout: time.Second}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			errc <- health.NewRunner(&countingChecker{}, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil).Run(ctx)
		}()
		got.next(t)
		blockUntil(t, clock, 1)
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run returned %v, want nil", err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not return after cancel")
		}
		if n := clock.Waiters(); n != 0 {
			t.Fatalf("%d timers left pending after Run returned", n)
		}
	})
	t.Run("during a probe", func(t *testing.T) {
		clock := healthtest.NewClock(time.Unix(0, 0))
		got := make(results, 1)
		hc := config.HealthCheck{Interval: time.Second, Timeout: time.Hour}
		entered := make(chan struct{})
		chk := health.CheckerFunc(func(ctx context.Context, _ netip.AddrPort) health.Result {
			close(entered)
			<-ctx.Done()
			return health.Result{Reason: "cancelled"}
		})
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			errc <- health.NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil).Run(ctx)
		}()
		select {
		case <-entered:
		case <-time.After(wait):
			t.Fatal("probe never started")
		}
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run returned %v, want nil", err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not return after cancel")
		}
		// A probe cut short by shutdown says nothing about the server.
		got.none(t)
	})
}

// A probe that could not run for lack of descriptors is not reported: the
// server keeps the state it had, and the next conclusive probe counts.
func TestRunnerDropsInconclusiveResults(t *testing.T) {
	clock := healthtest.NewClock(time.Unix(0, 0))
	got := make(results, 4)
	hc := config.HealthCheck{Interval: time.Second, Timeout: 100 * time.Millisecond}
	calls := 0
	chk := health.CheckerFunc(func(context.Context, netip.AddrPort) health.Result {
		calls++
		if calls == 1 {
			return health.Result{Reason: "socket: too many open files", Inconclusive: true}
		}
		return health.Result{OK: true, Reason: "fake ok"}
	})
	startRunner(t, health.NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))
	blockUntil(t, clock, 1)
	got.none(t)
	clock.Advance(hc.Interval)
	if res := got.next(t); !res.OK {
		t.Fatalf("second probe reported %+v, want the successful one", res)
	}
}

// A timeout noticed long after the deadline says this node was stalled
// (starved of CPU), not that the server is gone: Probe marks it so and the
// runner drops it. A timeout noticed on time, and any other failure
// however late, count.
func TestProbeTimeoutNoticedLateIsThisNodesStall(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tt := range []struct {
		name    string
		res     health.Result
		stalled bool
	}{
		{"timeout on time", health.Result{Reason: "timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: 320 * time.Millisecond}, false},
		{"timeout just within the slack", health.Result{Reason: "timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: 399 * time.Millisecond}, false},
		{"timeout noticed 500 ms late", health.Result{Reason: "timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: 800 * time.Millisecond}, true},
		{"handshake timeout noticed late", health.Result{Reason: "tls handshake: timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: time.Second}, true},
		{"refused, late", health.Result{Reason: "connection refused", Failure: health.Gone, Latency: time.Second}, false},
		// The kind decides, not the words: a reason quoting a server's
		// own timeout is an answer that came.
		{"an answer about a timeout, late", health.Result{Reason: `503: "upstream timeout after 300ms"`, Failure: health.Gone, Latency: time.Second}, false},
		{"rejected credentials, late", health.Result{Reason: "401 Unauthorized", Failure: health.Rejected, Latency: time.Second}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			chk := health.CheckerFunc(func(context.Context, netip.AddrPort) health.Result { return tt.res })
			got := health.Probe(t.Context(), chk, netip.MustParseAddrPort(testAddrText), timeout)
			if got.OK || got.Stalled != tt.stalled || got.Inconclusive != tt.stalled {
				t.Fatalf("Probe = %+v, want stalled=%v", got, tt.stalled)
			}
			if tt.stalled && !strings.Contains(got.Reason, "this node was stalled") {
				t.Fatalf("reason %q does not say the node was stalled", got.Reason)
			}
		})
	}
	clock := healthtest.NewClock(time.Unix(0, 0))
	got := make(results, 4)
	hc := config.HealthCheck{Interval: time.Second, Timeout: timeout}
	calls := 0
	chk := health.CheckerFunc(func(context.Context, netip.AddrPort) health.Result {
		calls++
		if calls == 1 {
			return health.Result{Reason: "timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: 2 * time.Second}
		}
		return health.Result{Reason: "timeout after 300ms", Failure: health.Gone, TimedOut: true, Latency: timeout}
	})
	startRunner(t, health.NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))
	blockUntil(t, clock, 1)
	got.none(t)
	clock.Advance(hc.Interval)
	if res := got.next(t); res.OK || res.Stalled {
		t.Fatalf("second probe reported %+v, want the timeout noticed on time", res)
	}
}
