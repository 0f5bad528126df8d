package witness

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"halb/internal/health/healthtest"
	"halb/test/support"
)

var (
	witnessAddr = netip.MustParseAddr("127.0.0.1")
	errLost     = errors.New("no echo reply")
)

// probeCall is one Probe call held by the fake until the test answers it.
type probeCall struct {
	ctx    context.Context
	target netip.Addr
	reply  chan error
}

// fakeProber hands every probe to the test and returns what the test says.
type fakeProber struct{ calls chan probeCall }

func (f *fakeProber) Probe(ctx context.Context, target netip.Addr) error {
	c := probeCall{ctx: ctx, target: target, reply: make(chan error, 1)}
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type harness struct {
	t       *testing.T
	w       *Witness
	clock   *healthtest.Clock
	prober  *fakeProber
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// testInterval is long so that the real per-probe timeout, derived from
// it, never fires while the test answers a probe.
const testInterval = time.Minute

func startWitness(t *testing.T, opts Options, log *slog.Logger) *harness {
	t.Helper()
	clock := healthtest.NewClock(time.Unix(1000, 0))
	opts.Clock = clock
	if opts.Interval == 0 {
		opts.Interval = testInterval
	}
	if opts.Timeout == 0 {
		opts.Timeout = testInterval
	}
	p := &fakeProber{calls: make(chan probeCall)}
	h := &harness{t: t, w: New(witnessAddr, p, opts, log), clock: clock, prober: p, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.w.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop cancels Run and checks that it returns nil promptly.
func (h *harness) stop() {
	h.t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

// nextProbe waits for the next Probe call.
func (h *harness) nextProbe() probeCall {
	h.t.Helper()
	select {
	case c := <-h.prober.calls:
		return c
	case <-time.After(5 * time.Second):
		h.t.Fatal("no probe within 5s")
		return probeCall{}
	}
}

// waitIdle waits until Run has recorded the last result and is waiting
// for the next interval.
func (h *harness) waitIdle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.clock.BlockUntil(ctx, 1); err != nil {
		h.t.Fatalf("witness did not wait for the next interval: %v", err)
	}
}

// answer replies to the next probe with err and waits for the result to
// be recorded.
func (h *harness) answer(err error) {
	h.t.Helper()
	h.nextProbe().reply <- err
	h.waitIdle()
}

// tick lets one interval pass, starting the next probe.
func (h *harness) tick() {
	h.clock.Advance(testInterval)
}

func TestNotReachableBeforeFirstResult(t *testing.T) {
	h := startWitness(t, Options{}, nil)
	c := h.nextProbe()
	if h.w.Reachable() || h.w.Known() {
		t.Fatalf("before any result: Reachable=%v Known=%v, want false false", h.w.Reachable(), h.w.Known())
	}
	select {
	case <-h.w.Changed():
		t.Fatal("Changed signalled before any result")
	default:
	}
	c.reply <- nil
	h.waitIdle()
}

func TestFirstResultDecides(t *testing.T) {
	for _, tt := range []struct {
		name  string
		err   error
		reach bool
	}{
		{"reply", nil, true},
		{"lost", errLost, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Rise and fall are large: only the first result may decide at once.
			h := startWitness(t, Options{Rise: 5, Fall: 5}, nil)
			h.answer(tt.err)
			if got := h.w.Reachable(); got != tt.reach {
				t.Errorf("Reachable = %v, want %v", got, tt.reach)
			}
			if !h.w.Known() {
				t.Error("Known = false after the first result")
			}
			select {
			case <-h.w.Changed():
			default:
				t.Error("no Changed signal after the first result")
			}
		})
	}
}

func TestFallAndRise(t *testing.T) {
	h := startWitness(t, Options{Fall: 3, Rise: 2}, nil)
	steps := []struct {
		err     error
		reach   bool
		changed bool
	}{
		{nil, true, true}, // first reply decides
		{errLost, true, false},
		{errLost, true, false},
		{nil, true, false}, // a reply resets the failure count
		{errLost, true, false},
		{errLost, true, false},
		{errLost, false, true}, // third loss in a row
		{nil, false, false},
		{errLost, false, false}, // a loss resets the success count
		{nil, false, false},
		{nil, true, true}, // second reply in a row
	}
	for i, s := range steps {
		if i > 0 {
			h.tick()
		}
		h.answer(s.err)
		if got := h.w.Reachable(); got != s.reach {
			t.Fatalf("step %d: Reachable = %v, want %v", i, got, s.reach)
		}
		var changed bool
		select {
		case <-h.w.Changed():
			changed = true
		default:
		}
		if changed != s.changed {
			t.Fatalf("step %d: Changed signalled = %v, want %v", i, changed, s.changed)
		}
	}
}

func TestChangedCoalescesWithoutBlocking(t *testing.T) {
	h := startWitness(t, Options{Fall: 1, Rise: 1}, nil)
	// Four state changes with nobody reading Changed: Run must not block.
	for i, err := range []error{nil, errLost, nil, errLost} {
		if i > 0 {
			h.tick()
		}
		h.answer(err)
	}
	if h.w.Reachable() {
		t.Fatal("Reachable after the last loss")
	}
	select {
	case <-h.w.Changed():
	default:
		t.Fatal("no Changed signal pending after four changes")
	}
	select {
	case <-h.w.Changed():
		t.Fatal("a second Changed signal was pending; want them coalesced into one")
	default:
	}
}

func TestProbesEveryIntervalFromProbeStart(t *testing.T) {
	h := startWitness(t, Options{}, nil)
	start := h.clock.Now()
	c := h.nextProbe()
	if c.target != witnessAddr {
		t.Fatalf("probed %v, want %v", c.target, witnessAddr)
	}
	// The probe itself takes a while; the next one is still due one
	// interval after this one started, not after it ended.
	h.clock.Advance(300 * time.Millisecond)
	c.reply <- nil
	h.waitIdle()
	next, ok := h.clock.NextDeadline()
	if !ok || !next.Equal(start.Add(testInterval)) {
		t.Fatalf("next probe due at %v (pending %v), want %v", next, ok, start.Add(testInterval))
	}
	h.clock.Advance(testInterval - 300*time.Millisecond - time.Nanosecond)
	if h.clock.Waiters() != 1 {
		t.Fatal("next probe started before the interval was over")
	}
	h.clock.Advance(time.Nanosecond)
	h.answer(nil)
}

func TestSlowProbeStartsNextAtOnce(t *testing.T) {
	h := startWitness(t, Options{}, nil)
	c := h.nextProbe()
	h.clock.Advance(testInterval + time.Second) // overran the interval
	c.reply <- errLost
	// No timer is left to advance: the next probe must come by itself.
	h.nextProbe().reply <- nil
	h.waitIdle()
}

func TestProbeBoundedByTimeout(t *testing.T) {
	for _, tt := range []struct {
		name              string
		interval, timeout time.Duration
		want              time.Duration
	}{
		{"timeout", time.Hour, 20 * time.Minute, 20 * time.Minute},
		{"timeout longer than interval is cut", 20 * time.Minute, time.Hour, 20 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startWitness(t, Options{Interval: tt.interval, Timeout: tt.timeout}, nil)
			c := h.nextProbe()
			deadline, ok := c.ctx.Deadline()
			left := time.Until(deadline)
			c.reply <- nil
			h.waitIdle()
			if !ok {
				t.Fatal("probe context has no deadline")
			}
			// The deadline was set on the wall clock just before the call.
			if left > tt.want || left < tt.want-time.Minute {
				t.Fatalf("probe deadline %v away, want about %v", left, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	w := New(witnessAddr, &fakeProber{}, Options{}, nil)
	got := []any{w.interval, w.timeout}
	want := []any{500 * time.Millisecond, 400 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("default %d = %v, want %v", i, got[i], want[i])
		}
	}
	// Fall 3, rise 2: check through the tracker's behaviour.
	for _, ok := range []bool{true, false, false} {
		w.tracker.Observe(ok)
	}
	if !w.tracker.Up() {
		t.Error("down after two losses, want fall 3")
	}
	w.tracker.Observe(false)
	w.tracker.Observe(true)
	if w.tracker.Up() {
		t.Error("up after one reply, want rise 2")
	}
	if w.Target() != witnessAddr {
		t.Errorf("Target = %v, want %v", w.Target(), witnessAddr)
	}
}

func TestCancelDuringProbeIsNotCounted(t *testing.T) {
	h := startWitness(t, Options{}, nil)
	c := h.nextProbe()
	h.stop()
	// The prober saw the cancel; whatever it returned is not a result.
	if err := c.ctx.Err(); err == nil {
		t.Fatal("probe context still alive after Run returned")
	}
	if h.w.Known() || h.w.Reachable() {
		t.Fatal("a probe cut short by cancel was counted")
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	h := startWitness(t, Options{}, nil)
	h.answer(nil)
	h.stop()
	if !h.w.Reachable() {
		t.Fatal("state lost on stop")
	}
}

func TestLogsTransitionsAtInfo(t *testing.T) {
	var buf support.Log
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := startWitness(t, Options{Fall: 1, Rise: 1}, log)
	h.answer(nil)
	h.tick()
	h.answer(nil) // no change: no log line
	h.tick()
	h.answer(errLost)
	h.stop()

	var lines []map[string]any
	for l := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2 (one per transition):\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"witness reachable", "witness unreachable"} {
		m := lines[i]
		if m["msg"] != want || m["level"] != "INFO" || m["component"] != "witness" || m["target"] != "127.0.0.1" {
			t.Errorf("line %d = %v, want INFO %q with component=witness target=127.0.0.1", i, m, want)
		}
	}
	if lines[1]["err"] != errLost.Error() {
		t.Errorf("unreachable line err = %v, want %q", lines[1]["err"], errLost)
	}
}
