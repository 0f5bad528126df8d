package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/sys/unix"

	"halb/test/support"
)

// step is the resolution of the fake clock; it divides every period of
// both profiles.
const step = 250 * time.Microsecond

// sim drives a detector the way heartbeatLoop does, on a fake clock: checks
// every check period and after each probe, probes that finish after
// rtt with the outcome answer gives (or after the probe timeout, for
// probeUnreachable).
type sim struct {
	d          *detector
	start, now time.Time
	rtt        time.Duration
	answer     func(started time.Time) probeOutcome
	pending    []pendingProbe
	seq        uint64
	boot       uint64
	// stall is a span in which this node runs nothing (from, to): beats
	// wait in the socket, probes out wait to be read.
	stall    [2]time.Duration
	outcomes []probeOutcome // of the downs, in order
	early    bool           // a down came before the beat was overdue
	// hints are when a "port unreachable" for lb1 arrives (detector.hint).
	hints []time.Duration
}

func newSim(t beatTiming, answer func(time.Time) probeOutcome) *sim {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &sim{
		d: newDetector(t), start: start, now: start, rtt: time.Millisecond,
		answer: answer, boot: 1,
	}
}

type pendingProbe struct {
	name    string
	started time.Time
	outcome probeOutcome
}

// at is the fake time offset from the start.
func (s *sim) at(off time.Duration) time.Time { return s.start.Add(off) }

// run advances the clock to until, delivering a beat of "lb1" at each
// time in beats that falls in the span, and returns the times at which
// lb1 went down and came back.
func (s *sim) run(until time.Duration, beats []time.Duration) (downs, ups []time.Duration) {
	tick := s.d.timing.check
	i, h := 0, 0
	for !s.now.After(s.at(until)) {
		off := s.now.Sub(s.start)
		if off >= s.stall[0] && off < s.stall[1] {
			s.now = s.now.Add(step)
			continue
		}
		for i < len(beats) && beats[i] <= off {
			s.seq++
			if s.d.beat(beat{node: "lb1", boot: s.boot, seq: s.seq}, s.now) {
				ups = append(ups, off)
			}
			i++
		}
		for h < len(s.hints) && s.hints[h] <= off {
			s.d.hint("lb1", s.now)
			h++
		}
		s.pending = slices.DeleteFunc(s.pending, func(pp pendingProbe) bool {
			took := s.rtt
			if pp.outcome == probeUnreachable {
				took = s.d.timing.probeTimeout
			}
			if s.now.Before(pp.started.Add(took)) {
				return false
			}
			s.d.probed(pp.name, pp.started, pp.outcome, s.now)
			s.check(off, &downs)
			return true
		})
		if off%tick == 0 {
			s.d.tick(s.now)
			for _, name := range s.d.probes(s.now) {
				s.pending = append(s.pending, pendingProbe{name: name, started: s.now, outcome: s.answer(s.now)})
			}
			s.check(off, &downs)
		}
		s.now = s.now.Add(step)
	}
	return downs, ups
}

func (s *sim) check(off time.Duration, downs *[]time.Duration) {
	v := s.d.check(s.now)
	for name, o := range v.down {
		*downs = append(*downs, off)
		s.outcomes = append(s.outcomes, o)
		_, early := v.early[name]
		s.early = s.early || early
	}
}

// every returns beats at from, from+step, ... up to and including to.
func every(from, to, step time.Duration) []time.Duration {
	var out []time.Duration
	for t := from; t <= to; t += step {
		out = append(out, t)
	}
	return out
}

func answering(o probeOutcome) func(time.Time) probeOutcome {
	return func(time.Time) probeOutcome { return o }
}

func TestDetectorDeadPeerDown(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    probeOutcome
		// window is when the peer may go down, after its last beat.
		window func(d *detector) (lo, hi time.Duration)
	}{
		{"killed: port refuses", probeRefused, func(d *detector) (time.Duration, time.Duration) {
			// Half an interval overdue, then at most one check period
			// until the probe starts, then its round trip.
			return d.overdue() + time.Millisecond, d.overdue() + d.timing.check + time.Millisecond
		}},
		{"host gone: no answer", probeUnreachable, func(d *detector) (time.Duration, time.Duration) {
			// The deadline, or the end of the last needed probe if that
			// comes later, plus up to one check period.
			tm := d.timing
			want := max(tm.deadline, d.overdue()+time.Duration(tm.lost-1)*tm.probeEvery+tm.probeTimeout)
			return want, want + tm.check
		}},
	} {
		for profile, tm := range beatTimings {
			t.Run(tt.name+"/"+profile, func(t *testing.T) {
				s := newSim(tm, answering(tt.o))
				last := 10 * tm.interval
				downs, _ := s.run(last+10*tm.interval, every(0, last, tm.interval))
				if len(downs) != 1 || s.outcomes[0] != tt.o {
					t.Fatalf("went down at %v (%v), want once, %v", downs, s.outcomes, tt.o)
				}
				lo, hi := tt.window(s.d)
				if got := downs[0] - last; got < lo || got > hi {
					t.Fatalf("down %s after the last beat, want %s to %s", got, lo, hi)
				}
				if s.early {
					t.Error("no hint, yet the verdict says one brought it forward")
				}
			})
		}
	}
}

// A killed peer's host answers this node's next packet to it (a beat,
// sent every interval) with "port unreachable": the peer is probed at once
// and, refused, is down within a check period and a round trip of that
// packet instead of 1.5 intervals after its last beat.
func TestDetectorUnreachableHintProbesAtOnce(t *testing.T) {
	for profile, tm := range beatTimings {
		t.Run(profile, func(t *testing.T) {
			s := newSim(tm, answering(probeRefused))
			last := 10 * tm.interval
			hint := last + tm.interval/5 // the ICMP for this node's next beat
			s.hints = []time.Duration{hint}
			downs, _ := s.run(last+10*tm.interval, every(0, last, tm.interval))
			if len(downs) != 1 || s.outcomes[0] != probeRefused {
				t.Fatalf("went down at %v (%v), want once, refused", downs, s.outcomes)
			}
			if got, hi := downs[0]-hint, tm.check+s.rtt; got < 0 || got > hi {
				t.Fatalf("down %s after the hint, want within %s (overdue would be %s after the last beat)", got, hi, s.d.overdue())
			}
			if !s.early {
				t.Error("the verdict does not say the hint brought it forward")
			}
		})
	}
}

// A hint is only a reason to ask: a peer whose port is open (a stray or
// forged ICMP, or a restart already listening) stays up, and a hint while
// it beats changes nothing.
func TestDetectorHintWithoutRefusalChangesNothing(t *testing.T) {
	for profile, tm := range beatTimings {
		t.Run(profile, func(t *testing.T) {
			s := newSim(tm, answering(probeConnected))
			last := 20 * tm.interval
			s.hints = every(tm.interval, last, tm.interval/2)
			downs, _ := s.run(last, every(0, last, tm.interval))
			if len(downs) != 0 {
				t.Fatalf("went down at %v (%v) with its port open and beats on time", downs, s.outcomes)
			}
		})
	}
}

// This node's own stall (starved of CPU, as a whole machine is at a load
// average of 30) is not its peers' silence: on waking, before the beats
// queued meanwhile are read, memberlist's callback and the loop both find
// the peer still alive, nothing is probed and nothing goes down.
func TestDetectorOwnStallIsNotPeerSilence(t *testing.T) {
	for profile, tm := range beatTimings {
		t.Run(profile, func(t *testing.T) {
			d := newDetector(tm)
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			seq := uint64(0)
			var off time.Duration
			for ; off <= time.Second; off += tm.check {
				if off%tm.interval == 0 {
					seq++
					d.beat(beat{node: "lb1", boot: 1, seq: seq}, start.Add(off))
				}
				d.tick(start.Add(off))
				d.probes(start.Add(off))
				if v := d.check(start.Add(off)); len(v.down) != 0 {
					t.Fatalf("down at %s while beating", off)
				}
			}
			wake := start.Add(off + 800*time.Millisecond)
			// memberlist's callback may run first: the loop has not yet
			// discounted the stall.
			if !d.evidence("lb1", wake) {
				t.Fatal("no evidence for a beating peer right after this node's own 800 ms stall")
			}
			d.tick(wake)
			if !d.evidence("lb1", wake) {
				t.Fatal("no evidence after the loop's first step since the stall")
			}
			if got := d.probes(wake); len(got) != 0 {
				t.Fatalf("probes %v for this node's stall", got)
			}
			if v := d.check(wake); len(v.down) != 0 {
				t.Fatalf("down %v for this node's stall", v.down)
			}
			// Without a tick for the check period (the loop stalled), the
			// same silence would have counted: the evidence window is
			// shorter than the stall.
			if tm.evidence >= 800*time.Millisecond {
				t.Fatalf("the stall must outlast the evidence window %s", tm.evidence)
			}
		})
	}
}

// A peer that dies while this node stalls is still found, a deadline
// after this node wakes: the stall delays the verdict, it does not hide it.
func TestDetectorDeathDuringOwnStallStillFound(t *testing.T) {
	for _, o := range []probeOutcome{probeRefused, probeUnreachable} {
		t.Run(o.String(), func(t *testing.T) {
			tm := beatTimings["lan"]
			s := newSim(tm, answering(o))
			last := time.Second
			s.stall = [2]time.Duration{last + tm.interval, last + 800*time.Millisecond}
			downs, _ := s.run(2*time.Second, every(0, last, tm.interval))
			if len(downs) != 1 {
				t.Fatalf("went down at %v, want once", downs)
			}
			if got := downs[0] - s.stall[1]; got < 0 || got > tm.deadline+tm.probeTimeout+2*tm.check {
				t.Fatalf("down %s after waking, want within %s", got, tm.deadline+tm.probeTimeout+2*tm.check)
			}
		})
	}
}

func TestDetectorStalledPeerStaysUp(t *testing.T) {
	// The peer's process is starved or stopped: its kernel still accepts
	// connections. However long the stall, memberlist decides, not the
	// heartbeat.
	tm := beatTimings["lan"]
	s := newSim(tm, answering(probeConnected))
	if downs, _ := s.run(10*time.Second, every(0, time.Second, tm.interval)); len(downs) != 0 {
		t.Fatalf("went down at %v while its port accepted connections", downs)
	}
}

func TestDetectorOneLostProbeIsNotEnough(t *testing.T) {
	// Every other SYN is lost: the host is there, so the peer stays up.
	tm := beatTimings["lan"]
	n := 0
	s := newSim(tm, func(time.Time) probeOutcome {
		n++
		if n%2 == 1 {
			return probeUnreachable
		}
		return probeConnected
	})
	if downs, _ := s.run(5*time.Second, every(0, time.Second, tm.interval)); len(downs) != 0 {
		t.Fatalf("went down at %v with every other probe answered", downs)
	}
}

func TestDetectorFrozenThenKilled(t *testing.T) {
	// Frozen at 1 s (SIGSTOP), killed at 1.5 s (SIGKILL): down at the
	// first probe after the kill, not during the freeze.
	tm := beatTimings["lan"]
	killed := 1500 * time.Millisecond
	s := newSim(tm, func(started time.Time) probeOutcome {
		if started.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) < killed {
			return probeConnected
		}
		return probeRefused
	})
	downs, _ := s.run(3*time.Second, every(0, time.Second, tm.interval))
	if len(downs) != 1 || downs[0] < killed || downs[0] > killed+tm.probeEvery+tm.check+s.rtt {
		t.Fatalf("downs %v, want one within a probe period of the kill at %s", downs, killed)
	}
}

func TestDetectorToleratesJitter(t *testing.T) {
	// Beats late by up to just under the deadline, the peer's host never
	// answering probes: no gap reaches the deadline, so it never goes down.
	for profile, tm := range beatTimings {
		t.Run(profile, func(t *testing.T) {
			r := rand.New(rand.NewPCG(6, 1))
			var beats []time.Duration
			maxGap := tm.deadline - 2*time.Millisecond
			for at := time.Duration(0); at < 60*time.Second; {
				beats = append(beats, at)
				at += tm.interval/2 + time.Duration(r.Int64N(int64(maxGap-tm.interval/2)))
			}
			s := newSim(tm, answering(probeUnreachable))
			if downs, _ := s.run(beats[len(beats)-1], beats); len(downs) != 0 {
				t.Fatalf("went down at %v with every gap below %s", downs, maxGap)
			}
		})
	}
}

func TestDetectorPausedHostComesBackAtItsFirstBeat(t *testing.T) {
	// The holder's whole host freezes for 2 s (a VM pause: not even its
	// kernel answers), then resumes with its next sequence numbers. The
	// backup takes over while it is down; both hold the VIP only from the
	// resume until the backup hears the first beat, and the election then
	// keeps one.
	tm := beatTimings["lan"]
	s := newSim(tm, answering(probeUnreachable))
	pauseAt, resumeAt := time.Second, 3*time.Second
	beats := append(every(0, pauseAt, tm.interval), every(resumeAt, resumeAt+time.Second, tm.interval)...)
	downs, ups := s.run(resumeAt+time.Second, beats)
	if len(downs) != 1 || downs[0] > pauseAt+tm.deadline+tm.interval {
		t.Fatalf("downs %v: want one soon after the pause at %s", downs, pauseAt)
	}
	if len(ups) != 1 || ups[0] != resumeAt {
		t.Fatalf("ups %v: want one at the first beat after the resume (%s)", ups, resumeAt)
	}
	if s.d.isDown("lb1") {
		t.Fatal("lb1 still down after its beats resumed")
	}
}

func TestDetectorRestartedPeerIsAccepted(t *testing.T) {
	tm := beatTimings["lan"]
	s := newSim(tm, answering(probeRefused))
	downs, _ := s.run(time.Second, every(0, 200*time.Millisecond, tm.interval))
	if len(downs) != 1 {
		t.Fatalf("downs %v, want 1", downs)
	}
	// A new process starts its sequence over under a new boot id.
	if !s.d.beat(beat{node: "lb1", boot: 2, seq: 1}, s.now) || s.d.isDown("lb1") {
		t.Fatal("a beat from the restarted process did not bring lb1 back")
	}
}

func TestDetectorIgnoresReplayedBeats(t *testing.T) {
	tm := beatTimings["lan"]
	s := newSim(tm, answering(probeRefused))
	s.run(500*time.Millisecond, every(0, 500*time.Millisecond, tm.interval))
	last := s.seq
	// Replays of beats already seen, e.g. captured and sent again, must not
	// keep a dead peer alive.
	for at := 550 * time.Millisecond; at < 2*time.Second; at += 50 * time.Millisecond {
		s.now = s.at(at)
		if s.d.beat(beat{node: "lb1", boot: s.boot, seq: last - uint64(at/time.Second)}, s.now) {
			t.Fatal("a replayed beat brought lb1 back")
		}
	}
	s.now = s.at(501 * time.Millisecond)
	downs, _ := s.run(2*time.Second, nil)
	if len(downs) != 1 {
		t.Fatalf("downs %v: want lb1 down despite the replayed beats", downs)
	}
}

func TestDetectorStaleProbeIgnoredLateOneCounts(t *testing.T) {
	tm := beatTimings["lan"]
	d := newDetector(tm)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.beat(beat{node: "lb1", boot: 1, seq: 1}, t0)
	probeAt := t0.Add(d.overdue())
	if got := d.probes(probeAt); len(got) != 1 {
		t.Fatalf("probes %v, want lb1", got)
	}
	// A late beat arrives while the probe is out; the probe then fails.
	d.beat(beat{node: "lb1", boot: 1, seq: 2}, probeAt.Add(10*time.Millisecond))
	d.probed("lb1", probeAt, probeRefused, probeAt.Add(20*time.Millisecond))
	if down := d.check(probeAt.Add(d.deadline())).down; len(down) != 0 {
		t.Fatalf("down %v on a probe that a newer beat made stale", down)
	}

	// This node was starved: its probes come back long after their
	// timeout, still unanswered. The probe read that from the kernel's
	// socket state, so the silence is real and counts.
	last := probeAt.Add(10 * time.Millisecond)
	var started []time.Time
	for at := last.Add(d.overdue()); len(started) < tm.lost; at = at.Add(tm.probeEvery) {
		if got := d.probes(at); len(got) != 1 {
			t.Fatalf("probes at %s: %v, want lb1", at.Sub(last), got)
		}
		started = append(started, at)
	}
	late := started[len(started)-1].Add(3 * tm.probeTimeout)
	for _, s := range started {
		d.probed("lb1", s, probeUnreachable, late)
	}
	if down := d.check(late).down; down["lb1"] != probeUnreachable {
		t.Fatalf("down %v, want lb1 unreachable after %d late but unanswered probes", down, tm.lost)
	}
}

// The decision rules of the detector, one observation sequence each: lb1
// beats at 0, then the listed things happen, and check runs at the end.
func TestDetectorRules(t *testing.T) {
	tm := beatTimings["lan"]
	ov := time.Duration(tm.interval * 3 / 2) // overdue
	type op struct {
		at      time.Duration
		do      string // "probe", "result", "beat", "vouch" (lb3 beats, hearing lb1), "quiet" (lb3 beats, hearing nobody)
		started time.Duration
		o       probeOutcome
	}
	probe := func(at time.Duration) op { return op{at: at, do: "probe"} }
	result := func(at, started time.Duration, o probeOutcome) op {
		return op{at: at, do: "result", started: started, o: o}
	}
	p2 := ov + tm.probeEvery
	end := p2 + tm.probeTimeout // the second probe times out
	for _, tt := range []struct {
		name string
		ops  []op
		at   time.Duration
		want probeOutcome // the verdict on lb1, 0 if not down
		cut  bool         // whether lb1 is found cut off from here only
	}{
		{"two probes unanswered by the deadline: down", []op{
			probe(ov), probe(p2), result(ov+tm.probeTimeout, ov, probeUnreachable), result(end, p2, probeUnreachable),
		}, tm.deadline, probeUnreachable, false},
		{"two unanswered, deadline not yet reached", []op{
			probe(ov), probe(p2), result(ov+tm.probeTimeout, ov, probeUnreachable), result(end, p2, probeUnreachable),
		}, tm.deadline - time.Millisecond, 0, false},
		{"one unanswered probe is not enough, however long the silence", []op{
			probe(ov), result(ov+tm.probeTimeout, ov, probeUnreachable),
		}, 10 * tm.deadline, 0, false},
		{"refused: down at once, before the deadline", []op{
			probe(ov), result(ov+time.Millisecond, ov, probeRefused),
		}, ov + time.Millisecond, probeRefused, false},
		{"connected: stalled, never down", []op{
			probe(ov), result(ov+time.Millisecond, ov, probeConnected),
		}, 10 * tm.deadline, 0, false},
		{"an answer between two losses resets the count", []op{
			probe(ov), result(ov+tm.probeTimeout, ov, probeUnreachable),
			probe(p2), result(p2+time.Millisecond, p2, probeConnected),
			probe(p2 + tm.probeEvery), result(p2+tm.probeEvery+tm.probeTimeout, p2+tm.probeEvery, probeUnreachable),
		}, 10 * tm.deadline, 0, false},
		{"a loss that overlapped an answer does not count", []op{
			probe(ov), probe(p2), result(p2+time.Millisecond, p2, probeConnected),
			result(ov+tm.probeTimeout, ov, probeUnreachable),
			probe(p2 + tm.probeEvery), result(p2+tm.probeEvery+tm.probeTimeout, p2+tm.probeEvery, probeUnreachable),
		}, 10 * tm.deadline, 0, false},
		{"inconclusive probes (this node could not probe) count for nothing", []op{
			probe(ov), result(ov+time.Millisecond, ov, probeInconclusive),
			probe(p2), result(p2+time.Millisecond, p2, probeInconclusive),
			probe(p2 + tm.probeEvery), result(p2+tm.probeEvery+time.Millisecond, p2+tm.probeEvery, probeInconclusive),
		}, 10 * tm.deadline, 0, false},
		{"a beat while probes are out voids them", []op{
			probe(ov), probe(p2), {at: p2 + time.Millisecond, do: "beat"},
			result(ov+tm.probeTimeout, ov, probeUnreachable), result(end, p2, probeUnreachable),
		}, p2 + time.Millisecond + tm.deadline - time.Millisecond, 0, false},
		{"unreachable but heard by lb3: cut off, not down", []op{
			{at: 0, do: "vouch"}, probe(ov), probe(p2),
			{at: tm.interval, do: "vouch"}, {at: 2 * tm.interval, do: "vouch"},
			result(ov+tm.probeTimeout, ov, probeUnreachable), result(end, p2, probeUnreachable),
			{at: 3 * tm.interval, do: "vouch"},
		}, tm.deadline, 0, true},
		{"lb3 stops hearing it: down", []op{
			{at: 0, do: "vouch"}, probe(ov), probe(p2),
			{at: tm.interval, do: "quiet"},
			result(ov+tm.probeTimeout, ov, probeUnreachable), result(end, p2, probeUnreachable),
			{at: 2 * tm.interval, do: "quiet"}, {at: 3 * tm.interval, do: "quiet"},
		}, tm.deadline, probeUnreachable, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := newDetector(tm)
			t0 := time.Unix(1000, 0)
			seq := map[string]uint64{"lb1": 1}
			d.beat(beat{node: "lb1", boot: 1, seq: 1}, t0)
			for _, o := range tt.ops {
				now := t0.Add(o.at)
				switch o.do {
				case "probe":
					if got := d.probes(now); !slices.Contains(got, "lb1") {
						t.Fatalf("probes at %s = %v, want lb1", o.at, got)
					}
				case "result":
					d.probed("lb1", t0.Add(o.started), o.o, now)
				case "beat":
					seq["lb1"]++
					d.beat(beat{node: "lb1", boot: 1, seq: seq["lb1"]}, now)
				case "vouch", "quiet":
					seq["lb3"]++
					m := beat{node: "lb3", boot: 3, seq: seq["lb3"]}
					if o.do == "vouch" {
						m.hears = []string{"lb1"}
					}
					d.beat(m, now)
				}
			}
			v := d.check(t0.Add(tt.at))
			if got := v.down["lb1"]; got != tt.want {
				t.Errorf("verdict on lb1 = %v, want %v", got, tt.want)
			}
			if _, cut := v.cutOff["lb1"]; cut != tt.cut {
				t.Errorf("lb1 cut off = %v, want %v", cut, tt.cut)
			}
		})
	}
}

// A probe goes out every probe period while the silence lasts, never more
// than maxPending at once, and none once the peer is down.
func TestDetectorProbeSchedule(t *testing.T) {
	tm := beatTimings["lan"]
	d := newDetector(tm)
	t0 := time.Unix(1000, 0)
	d.beat(beat{node: "lb1", boot: 1, seq: 1}, t0)
	var starts []time.Duration
	for off := time.Duration(0); off <= time.Second; off += tm.check {
		if got := d.probes(t0.Add(off)); len(got) > 0 {
			starts = append(starts, off)
		}
	}
	ov := tm.interval * 3 / 2
	want := make([]time.Duration, maxPending)
	for i := range want {
		want[i] = ov + time.Duration(i)*tm.probeEvery
	}
	if !slices.Equal(starts, want) {
		t.Fatalf("probes started at %v, want %v (none answered: at most %d out)", starts, want, maxPending)
	}
	d.probed("lb1", t0.Add(ov), probeRefused, t0.Add(time.Second))
	if v := d.check(t0.Add(time.Second)); v.down["lb1"] != probeRefused {
		t.Fatalf("verdict %v, want lb1 refused", v.down)
	}
	if got := d.probes(t0.Add(2 * time.Second)); len(got) != 0 {
		t.Fatalf("probes %v of a peer that is down", got)
	}
}

func TestBeatCodec(t *testing.T) {
	for _, want := range []beat{
		{node: "lb1", boot: 42, seq: 7},
		{node: "lb1", boot: 42, seq: 8, hears: []string{"lb2", "lb3"}},
	} {
		b := encodeBeat(want)
		got, err := decodeBeat(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("decode = %+v %v, want %+v", got, err, want)
		}
	}
	// The first format, as a node that predates the peer list sends it.
	old := append(append(slices.Clone(beatMagic[:]), 42, 7, 3), "lb1"...)
	if got, err := decodeBeat(old); err != nil || got.node != "lb1" || got.hears != nil {
		t.Fatalf("decode of a first-format beat = %+v %v", got, err)
	}
	b := encodeBeat(beat{node: "lb1", boot: 1, seq: 1, hears: []string{"lb2"}})
	tooMany := make([]string, maxHears+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("lb", i)
	}
	for _, bad := range [][]byte{
		[]byte(`{"op":"yield"}`),
		b[:len(b)-1],
		append(slices.Clone(b), 0),
		encodeBeat(beat{node: "", boot: 1, seq: 1}),
		encodeBeat(beat{node: "lb1", boot: 1, seq: 1, hears: []string{""}}),
		encodeBeat(beat{node: "lb1", boot: 1, seq: 1, hears: tooMany}),
		append(slices.Clone(old), 0), // a peer count of zero
	} {
		if _, err := decodeBeat(bad); err == nil {
			t.Errorf("decode %q: no error", bad)
		}
	}
	if isBeat([]byte(`{"op":"yield"}`)) {
		t.Error("a drill message looks like a heartbeat")
	}
}

// A peer this node cannot reach, but that another peer beating on time
// still hears, is cut off from here only: it must not go down (that would
// elect a second VIP holder). Once no peer hears it either, it goes down.
func TestDetectorPartialPartition(t *testing.T) {
	tm := beatTimings["lan"]
	d := newDetector(tm)
	t0 := time.Unix(1000, 0)
	seq := uint64(0)
	beatAll := func(now time.Time, lb3Hears ...string) {
		seq++
		d.beat(beat{node: "lb3", boot: 3, seq: seq, hears: lb3Hears}, now)
	}
	d.beat(beat{node: "lb1", boot: 1, seq: 1}, t0)
	var down []string
	var cut map[string]string
	lb3HearsLb1Until := 1500 * time.Millisecond
	for off := time.Duration(0); off <= 3*time.Second; off += tm.check {
		now := t0.Add(off)
		if off%tm.interval == 0 {
			if off < lb3HearsLb1Until {
				beatAll(now, "lb1", "lb2")
			} else {
				beatAll(now, "lb2")
			}
		}
		for _, name := range d.probes(now) {
			d.probed(name, now, probeUnreachable, now.Add(tm.probeTimeout))
		}
		v := d.check(now)
		for name := range v.down {
			down = append(down, fmt.Sprintf("%s@%s", name, off))
		}
		for name, by := range v.cutOff {
			if cut == nil {
				cut = map[string]string{}
			}
			cut[name] = by
		}
		if off < lb3HearsLb1Until && d.isDown("lb1") {
			t.Fatalf("lb1 down at %s although lb3 hears it", off)
		}
	}
	if cut["lb1"] != "lb3" || len(cut) != 1 {
		t.Errorf("cut off = %v, want lb1 heard by lb3", cut)
	}
	if p := d.peers["lb1"]; p.cutOff != "" {
		t.Errorf("lb1, down now, still shows as heard via %q", p.cutOff)
	}
	if !d.isDown("lb1") || len(down) != 1 {
		t.Fatalf("downs %v, want lb1 once lb3 stopped hearing it", down)
	}
	if d.isDown("lb3") {
		t.Error("lb3, beating all along, is down")
	}
}

// What a node's beats report: the peers beating on time, not the late or
// down ones.
func TestDetectorHeard(t *testing.T) {
	tm := beatTimings["lan"]
	d := newDetector(tm)
	t0 := time.Unix(1000, 0)
	d.beat(beat{node: "lb3", boot: 1, seq: 1}, t0)
	d.beat(beat{node: "lb2", boot: 1, seq: 1}, t0.Add(tm.interval))
	if got := d.heard(t0.Add(tm.interval + tm.interval/5)); !slices.Equal(got, []string{"lb2", "lb3"}) {
		t.Errorf("heard = %v, want both", got)
	}
	if got := d.heard(t0.Add(2 * tm.interval)); !slices.Equal(got, []string{"lb2"}) {
		t.Errorf("heard = %v, want lb2 only: lb3 is overdue", got)
	}
	// Beats outweigh memberlist's "failed" for the evidence window, longer
	// than the down deadline: a node too busy for memberlist's probes reads
	// beats late too.
	if !d.evidence("lb3", t0.Add(tm.deadline)) || !d.evidence("lb3", t0.Add(tm.evidence-time.Millisecond)) ||
		d.evidence("lb3", t0.Add(tm.evidence)) {
		t.Errorf("evidence for lb3 should last %s after its last beat", tm.evidence)
	}
}

// beater is a bare memberlist node that sends heartbeats in a node's name,
// encrypted with key.
func beater(t *testing.T, ip string, key []byte) *memberlist.Memberlist {
	t.Helper()
	return plainMemberlist(t, "beater-"+ip, ip, key, io.Discard)
}

// plainMemberlist runs a memberlist with halb's label and key but none of
// halb: a sender of raw beats, or a node of a version without watches.
func plainMemberlist(t *testing.T, name, ip string, key []byte, logTo io.Writer) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = ip, 0, 0
	mc.Label = gossipLabel
	mc.Logger = log.New(logTo, "", 0)
	kr, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		t.Fatal(err)
	}
	mc.Keyring = kr
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

func TestBeatWithWrongKeyIgnored(t *testing.T) {
	addrA := freePort(t, "127.0.0.31")
	a := start(t, nodeConfig("lb1", addrA))
	waitReady(t, a, 5*time.Second)
	to := memberlist.Address{Addr: addrA.String(), Name: "lb1"}
	recorded := func(name string) bool {
		a.c.hb.mu.Lock()
		defer a.c.hb.mu.Unlock()
		_, ok := a.c.hb.det.peers[name]
		return ok
	}

	wrong := beater(t, "127.0.0.32", otherKey)
	for seq := range uint64(5) {
		if err := wrong.SendToAddress(to, encodeBeat(beat{node: "lb7", boot: 1, seq: seq + 1})); err != nil {
			t.Fatal(err)
		}
	}
	// A beat with the right key, sent after the wrong ones to the same
	// socket, shows that those were read and dropped.
	right := beater(t, "127.0.0.33", testKey)
	seq := uint64(0)
	waitFor(t, a.c, 5*time.Second, "beat with the right key recorded", func() bool {
		seq++
		if err := right.SendToAddress(to, encodeBeat(beat{node: "lb8", boot: 1, seq: seq})); err != nil {
			t.Fatal(err)
		}
		return recorded("lb8")
	})
	if recorded("lb7") {
		t.Fatal("a heartbeat encrypted with another key was accepted")
	}
	if a.rec.Count(slog.LevelDebug, "decrypt") == 0 {
		t.Error("the dropped beats left no trace in the log")
	}
}

func TestRefusedPeerMarkedDownThenBack(t *testing.T) {
	addrA, addrB := freePort(t, "127.0.0.34"), freePort(t, "127.0.0.35")
	rec := support.NewLog()
	c, err := New(nodeConfig("lb1", addrA, addrB), rec.Logger())
	if err != nil {
		t.Fatal(err)
	}
	// lb2's port refuses while the test says so, as after a kill -9; the
	// real probe is covered by TestTCPProbe and the lab's kill tests, the
	// other outcomes by the detector's tests.
	var refuse atomic.Bool
	c.hb.probe = func(context.Context, netip.Addr, netip.AddrPort, time.Duration) probeOutcome {
		if refuse.Load() {
			return probeRefused
		}
		return probeConnected
	}
	run(t, c, rec)
	b := start(t, nodeConfig("lb2", addrB, addrA))
	waitFor(t, c, 5*time.Second, "lb1 hears lb2 beat", func() bool {
		c.hb.mu.Lock()
		defer c.hb.mu.Unlock()
		_, ok := c.hb.det.peers["lb2"]
		return ok
	})

	refuse.Store(true)
	b.c.Silence(400 * time.Millisecond)
	waitFor(t, c, 2*time.Second, "lb2 listed but not alive", func() bool {
		m, ok := member(c, "lb2")
		return ok && !m.Alive
	})
	// lb2 "restarts": its port accepts again. (After its silence it may
	// beat again only once it has rejoined lb1.)
	refuse.Store(false)
	waitFor(t, c, 3*time.Second, "lb2 alive again", func() bool {
		m, ok := member(c, "lb2")
		return ok && m.Alive
	})
	if rec.Count(slog.LevelWarn, "refuses connections", "peer=lb2") != 1 {
		t.Error("the down verdict was not logged once")
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.36:0")
	if err != nil {
		t.Fatal(err)
	}
	open := netip.MustParseAddrPort(ln.Addr().String())
	from := netip.MustParseAddr("127.0.0.37")
	ctx := context.Background()
	if o := tcpProbe(ctx, from, open, time.Second); o != probeConnected {
		t.Errorf("open port: %v, want connected", o)
	}
	_ = ln.Close()
	if o := tcpProbe(ctx, from, open, time.Second); o != probeRefused {
		t.Errorf("closed port: %v, want refused", o)
	}
}

// TestTCPProbeAlwaysLabelsItsStream: a probe whose verdict was settled
// before its connection was (here: its context had ended) still sends
// memberlist's label header on a connection that did get established, so
// the peer never reads an unlabelled stream and logs it as refused gossip.
func TestTCPProbeAlwaysLabelsItsStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.38:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	to := netip.MustParseAddrPort(ln.Addr().String())
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	accepted := 0
	for i := 0; i < 20 && accepted < 3; i++ {
		_ = tcpProbe(ended, netip.MustParseAddr("127.0.0.39"), to, time.Second)
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
		conn, err := ln.Accept()
		if err != nil {
			continue // the probe closed before the handshake finished: nothing reached the peer
		}
		accepted++
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		rest, label, err := memberlist.RemoveLabelHeaderFromStream(conn)
		if err != nil || label != gossipLabel {
			t.Fatalf("the peer read label %q (%v) from an abandoned probe, want %q", label, err, gossipLabel)
		}
		if more, err := io.ReadAll(rest); err != nil || len(more) != 0 {
			t.Errorf("after the label the probe sent %q (%v), want a clean end of stream", more, err)
		}
		_ = conn.Close()
	}
	if accepted == 0 {
		t.Fatal("no abandoned probe ever got connected; the test checked nothing")
	}
}

func TestTCPProbeIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer func() { _ = ln.Close() }()
	open := netip.MustParseAddrPort(ln.Addr().String())
	if o := tcpProbe(context.Background(), netip.MustParseAddr("::1"), open, time.Second); o != probeConnected {
		t.Errorf("open port: %v, want connected", o)
	}
}

// A port whose SYNs go unanswered (here: a listener whose accept queue is
// full, so the kernel drops them, as a vanished host's silence looks) is
// unreachable once the timeout has passed, and not before.
func TestTCPProbeUnanswered(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 41}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.41"), uint16(sa.(*unix.SockaddrInet4).Port))
	from := netip.MustParseAddr("127.0.0.42")
	// Fill the accept queue: nobody accepts, so connections stay in it
	// until the kernel drops every further SYN.
	ctx := context.Background()
	var filled bool
	for range 8 {
		if tcpProbe(ctx, from, to, 200*time.Millisecond) == probeUnreachable {
			filled = true
			break
		}
	}
	if !filled {
		t.Fatal("the listener's full accept queue still answered SYNs")
	}
	const timeout = 60 * time.Millisecond
	start := time.Now()
	if o := tcpProbe(ctx, from, to, timeout); o != probeUnreachable {
		t.Fatalf("unanswered port: %v, want unreachable", o)
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("gave up after %s, before its %s timeout", took, timeout)
	}
}

// The probe judges by the kernel's state of its socket, not by its timer:
// looked at long after its timeout (this node was starved of CPU), a
// connection the peer's kernel answered in time is connected.
func TestTCPProbeLateLookSeesTheAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.43:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	to := netip.MustParseAddrPort(ln.Addr().String())
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Connect(fd, sockaddr(to)); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		t.Fatal(err)
	}
	// Wait for the handshake the way the kernel reports it, not by time.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 5000); n != 1 || err != nil {
		t.Fatalf("poll: %d %v", n, err)
	}
	long := time.Now().Add(-time.Hour)
	if o := awaitConnect(context.Background(), fd, long, 50*time.Millisecond); o != probeConnected {
		t.Fatalf("late look at an answered connect: %v, want connected", o)
	}
}

// memberlist declaring a member failed while its beats still arrive (a
// suspicion that outlived a healed partition) must not remove it: that
// would elect a second holder. It goes once its beats have stopped, and a
// member leaving on purpose goes at once.
func TestFailedVerdictDisputedByBeats(t *testing.T) {
	addrA, addrB, addrC := freePort(t, "127.0.0.36"), freePort(t, "127.0.0.37"), freePort(t, "127.0.0.38")
	rec := support.NewLog()
	c, err := New(nodeConfig("lb1", addrA, addrB, addrC), rec.Logger())
	if err != nil {
		t.Fatal(err)
	}
	d := &delegate{c: c}
	join := func(name string, addr netip.AddrPort, st State) *memberlist.Node {
		meta, err := EncodeState(st)
		if err != nil {
			t.Fatal(err)
		}
		n := &memberlist.Node{Name: name, Addr: addr.Addr().AsSlice(), Port: addr.Port(), Meta: meta}
		d.NotifyJoin(n)
		return n
	}
	listed := func(name string) bool { _, ok := member(c, name); return ok }

	lb2 := join("lb2", addrB, State{Priority: 100, Eligible: true})
	now := time.Now()
	c.hb.mu.Lock()
	c.hb.det.beat(beat{node: "lb2", boot: 2, seq: 1}, now)
	c.hb.mu.Unlock()
	d.NotifyLeave(lb2)
	if m, ok := member(c, "lb2"); !ok || !m.Alive || !m.Disputed {
		t.Fatalf("lb2, beating a moment ago, was removed or not marked disputed on memberlist's word alone: %+v", m)
	}
	if rec.Count(slog.LevelWarn, "heartbeats say it lives", "peer=lb2") != 1 {
		t.Error("the disputed verdict was not logged")
	}
	c.judge(now.Add(c.hb.timing.evidence / 2))
	if !listed("lb2") {
		t.Fatal("lb2 removed while its last beat was recent")
	}
	c.judge(now.Add(c.hb.timing.evidence))
	if listed("lb2") {
		t.Fatal("lb2 still listed after its beats stopped")
	}

	// Not beating here, but heard by a peer that is: kept too.
	lb3 := join("lb3", addrC, State{Priority: 50, Eligible: true})
	c.hb.mu.Lock()
	c.hb.det.beat(beat{node: "lb2", boot: 2, seq: 2, hears: []string{"lb3"}}, time.Now())
	c.hb.mu.Unlock()
	d.NotifyLeave(lb3)
	if !listed("lb3") {
		t.Fatal("lb3, heard by lb2, was removed")
	}

	// Leaving on purpose: its state says maintenance.
	lb3 = join("lb3", addrC, State{Priority: 50, Maintenance: true})
	d.NotifyLeave(lb3)
	if listed("lb3") {
		t.Fatal("lb3 left on purpose but is still listed")
	}
}

// judge and Members take the same two locks; a disputed member makes judge
// take both. Taken in different orders they deadlock, which froze the
// admin API in a chaos run.
func TestJudgeAndMembersDoNotDeadlock(t *testing.T) {
	addrA, addrB := freePort(t, "127.0.0.39"), freePort(t, "127.0.0.40")
	c, err := New(nodeConfig("lb1", addrA, addrB), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &delegate{c: c}
	meta, err := EncodeState(State{Priority: 100, Eligible: true})
	if err != nil {
		t.Fatal(err)
	}
	n := &memberlist.Node{Name: "lb2", Addr: addrB.Addr().AsSlice(), Port: addrB.Port(), Meta: meta}
	d.NotifyJoin(n)
	c.hb.mu.Lock()
	c.hb.det.beat(beat{node: "lb2", boot: 2, seq: 1}, time.Now().Add(time.Hour))
	c.hb.mu.Unlock()
	d.NotifyLeave(n)
	judged, listed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(judged)
		for range 20000 {
			c.judge(time.Now())
		}
	}()
	go func() {
		defer close(listed)
		for range 20000 {
			_ = c.Members()
		}
	}()
	deadline := time.After(10 * time.Second)
	for _, done := range []chan struct{}{judged, listed} {
		select {
		case <-done:
		case <-deadline:
			t.Fatal("judge and Members deadlocked")
		}
	}
	if _, ok := member(c, "lb2"); !ok {
		t.Fatal("the disputed member vanished though its beats are fresh")
	}
}

// FuzzDecodeBeat: whatever a key holder sends as a heartbeat either fails
// to decode or yields a beat within the limits the detector relies on,
// which encodes back to a beat that decodes the same.
func FuzzDecodeBeat(f *testing.F) {
	f.Add(encodeBeat(beat{node: "lb1", boot: 1, seq: 1}))
	f.Add(encodeBeat(beat{node: "lb2", boot: 1 << 60, seq: 99, hears: []string{"lb1", "lb3"}}))
	f.Add([]byte(`{"op":"yield"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeBeat(in)
		if err != nil {
			return
		}
		if m.node == "" || len(m.node) > maxNameLen || len(m.hears) > maxHears {
			t.Fatalf("decoded a beat out of limits: %+v", m)
		}
		for _, h := range m.hears {
			if h == "" || len(h) > maxNameLen {
				t.Fatalf("decoded a peer name out of limits: %q", h)
			}
		}
		again, err := decodeBeat(encodeBeat(m))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", m, again, err)
		}
	})
}
