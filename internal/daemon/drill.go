package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"halb/internal/admin"
	"halb/internal/round"
)

// Drill requests travel between nodes as small JSON messages over gossip's
// reliable channel. Durations, not deadlines, so clock skew does not
// matter beyond the replay window (see replay.go).
type drillMsg struct {
	Op  string        `json:"op"` // opYield, opBoost, opSilence, opEnd
	For time.Duration `json:"for"`
	// ID and Sent let the receiver refuse a replayed request.
	ID   string    `json:"id,omitempty"`
	Sent time.Time `json:"sent,omitzero"`
}

const (
	opYield   = "yield"   // the holder leaves the election for a while
	opBoost   = "boost"   // the target outranks every node for a while
	opSilence = "silence" // the holder plays dead, as if its process were killed (cluster.Silence)
	opEnd     = "end"     // yield and boost end now

	defaultDrillHold = 30 * time.Second
	maxDrillHold     = 5 * time.Minute
	defaultHardHold  = 5 * time.Second
)

// drills starts and ends drills on the operator's request, and plays
// this node's part in the drills peers ask for.
type drills struct {
	log    *slog.Logger
	ctl    *controller
	replay replayGuard

	mu sync.Mutex
	// started is the drill this node asked for, to refuse a second one.
	started  *admin.DrillStart
	deadline time.Time
	from, to string
}

// errNoDrill: the node has nothing to drill.
var errNoDrill = fmt.Errorf("this node has no cluster and no VIP to drill: %w", admin.ErrInvalid)

// pick returns the announcer of the VIP a request names, the first one
// for none.
func (d *drills) pick(name string) (*announcer, error) {
	if d.ctl.cluster == nil || len(d.ctl.announcers) == 0 {
		return nil, errNoDrill
	}
	if name == "" {
		return d.ctl.announcers[0], nil
	}
	for _, x := range d.ctl.announcers {
		if x.cfg.Address.Addr().String() == admin.BareIP(name) {
			return x, nil
		}
	}
	return nil, fmt.Errorf("no VIP %q here: %w", name, admin.ErrNotFound)
}

// refuseSecond refuses a drill while another one this node started runs.
func (d *drills) refuseSecond(now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started == nil || !now.Before(d.deadline) {
		return nil
	}
	s := *d.started
	return fmt.Errorf("a drill is already running (VIP %s from %s to %s, started %s ago): end it first: %w",
		s.VIP, s.From, s.To, now.Sub(s.Started).Round(time.Second), admin.ErrInvalid)
}

// target chooses the node a drill moves vip to from holder: req.To, or
// the best other eligible member.
func (d *drills) target(req admin.DrillRequest, vip, holder string) (string, error) {
	var candidates []string
	best, bestPrio := "", -1
	for _, m := range d.ctl.cluster.Members() {
		if m.Name == holder || !m.Alive || m.StateErr != "" || !m.State.Eligible {
			continue
		}
		candidates = append(candidates, m.Name)
		if m.State.Priority > bestPrio || (m.State.Priority == bestPrio && m.Name < best) {
			best, bestPrio = m.Name, m.State.Priority
		}
	}
	to := req.To
	switch {
	case len(candidates) == 0:
		return "", fmt.Errorf("no node other than the holder %s is eligible: a drill would leave %s nowhere to go: %w", holder, vip, admin.ErrInvalid)
	case to == "":
		to = best
	case to == holder:
		return "", fmt.Errorf("%s already holds %s: %w", to, vip, admin.ErrInvalid)
	case !slices.Contains(candidates, to):
		return "", fmt.Errorf("%s is not an eligible member (eligible: %s): %w", to, strings.Join(candidates, ", "), admin.ErrInvalid)
	}
	if req.Hard && to != best {
		return "", fmt.Errorf("a hard drill lets the election pick the successor, as a crash would (%s), so --to %s cannot be honoured: %w", best, to, admin.ErrInvalid)
	}
	return to, nil
}

// holdFor is how long a drill keeps the holder out.
func holdFor(req admin.DrillRequest) (time.Duration, error) {
	switch {
	case req.Hold <= 0 && req.Hard:
		return defaultHardHold, nil
	case req.Hold <= 0:
		return defaultDrillHold, nil
	case req.Hold > maxDrillHold:
		return 0, fmt.Errorf("hold %s is longer than %s: %w", req.Hold, maxDrillHold, admin.ErrInvalid)
	}
	return req.Hold, nil
}

// start asks the VIP's holder to leave the election (or to go silent, for
// a hard drill) and the target to outrank everyone, so the election moves
// the VIP, make before break.
func (d *drills) start(req admin.DrillRequest) (admin.DrillStart, error) {
	if vip, ok := d.bgpVIP(req.VIP); ok {
		return d.startBGP(req, vip)
	}
	a, err := d.pick(req.VIP)
	if err != nil {
		return admin.DrillStart{}, err
	}
	vip := a.cfg.Address.Addr().String()
	now := time.Now()
	if err := d.refuseSecond(now); err != nil {
		return admin.DrillStart{}, err
	}
	_, v := d.ctl.snapshot()
	holder := v.holder[vip]
	if holder == "" {
		return admin.DrillStart{}, fmt.Errorf("nobody holds %s yet: nothing to move: %w", vip, admin.ErrInvalid)
	}
	to, err := d.target(req, vip, holder)
	if err != nil {
		return admin.DrillStart{}, err
	}
	hold, err := holdFor(req)
	if err != nil {
		return admin.DrillStart{}, err
	}
	// Boost the target first, so that when the holder steps away the
	// election already points at the target. A hard drill boosts nobody:
	// a boost would preempt the holder at once and hide the detection.
	if !req.Hard {
		if err := d.send(to, drillMsg{Op: opBoost, For: hold}); err != nil {
			return admin.DrillStart{}, err
		}
	}
	op := opYield
	if req.Hard {
		op = opSilence
	}
	if err := d.send(holder, drillMsg{Op: op, For: hold}); err != nil {
		_ = d.send(to, drillMsg{Op: opEnd})
		return admin.DrillStart{}, err
	}
	start := admin.DrillStart{VIP: vip, From: holder, To: to, Hard: req.Hard, Started: now}
	d.mu.Lock()
	d.started, d.deadline = &start, now.Add(hold)
	d.from, d.to = holder, to
	d.mu.Unlock()
	d.log.Info("drill started", "vip", vip, "from", holder, "to", to, "hard", req.Hard, "hold", hold)
	return start, nil
}

// end lets the holder rejoin the election and ends the target's boost. A
// silenced holder comes back when its silence runs out; it cannot hear
// the request before.
func (d *drills) end() error {
	d.mu.Lock()
	from, to := d.from, d.to
	running := d.started != nil
	d.started = nil
	d.mu.Unlock()
	if !running {
		return fmt.Errorf("no drill started on this node: %w", admin.ErrNotFound)
	}
	var errs []error
	for _, n := range []string{from, to} {
		if n == "" {
			continue // a BGP drill has no target
		}
		if err := d.send(n, drillMsg{Op: opEnd}); err != nil && !strings.Contains(err.Error(), "not a member") {
			errs = append(errs, err)
		}
	}
	d.log.Info("drill ended", "from", from, "to", to)
	return errors.Join(errs...)
}

// send delivers m to node, or applies it here when node is this one.
func (d *drills) send(node string, m drillMsg) error {
	if node == d.ctl.name {
		d.apply(m)
		return nil
	}
	m.ID, m.Sent = newRequestID(), time.Now()
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode drill request: %w", err)
	}
	if err := d.ctl.cluster.Send(node, b); err != nil {
		return fmt.Errorf("ask %s to %s: %w", node, m.Op, err)
	}
	return nil
}

// handle applies a drill request from a peer; bad input is logged and
// dropped, never trusted.
func (d *drills) handle(b []byte) {
	var m drillMsg
	if err := json.Unmarshal(b, &m); err != nil {
		d.log.Warn("ignored an unreadable request from a peer", "err", err)
		return
	}
	if m.For < 0 || m.For > maxDrillHold {
		d.log.Warn("ignored a drill request with an out-of-range duration", "op", m.Op, "for", m.For)
		return
	}
	if why := d.replay.check(m.ID, m.Sent, time.Now()); why != "" {
		d.log.Warn("refused a drill request from a peer", "op", m.Op, "why", why)
		return
	}
	d.apply(m)
}

func (d *drills) apply(m drillMsg) {
	now := time.Now()
	var change func(*round.Drill)
	switch m.Op {
	case opYield:
		change = func(r *round.Drill) { r.YieldUntil = now.Add(m.For) }
	case opBoost:
		change = func(r *round.Drill) { r.BoostUntil = now.Add(m.For) }
	case opSilence:
		change = func(r *round.Drill) { r.SilencedUntil = now.Add(m.For) }
	case opEnd:
		change = func(r *round.Drill) { r.YieldUntil, r.BoostUntil = time.Time{}, time.Time{} }
	default:
		d.log.Warn("ignored an unknown drill request", "op", m.Op)
		return
	}
	d.ctl.mu.Lock()
	change(&d.ctl.facts.drill)
	d.ctl.mu.Unlock()
	d.log.Info("drill request", "op", m.Op, "for", m.For)
	if m.Op == opSilence {
		// As if crashed: ports closed, VIPs left unannounced (the next
		// round, poked below, stands down without a handover), gossip
		// silent. Back when the silence is over (controller.reviveIfDue).
		d.ctl.die()
		d.ctl.cluster.Silence(m.For)
	}
	d.ctl.poke()
}

// roles reports this node's drill roles at now.
func (d *drills) roles(now time.Time) (yield, boost, silenced bool) {
	f, _ := d.ctl.snapshot()
	return now.Before(f.drill.YieldUntil), now.Before(f.drill.BoostUntil), now.Before(f.drill.SilencedUntil)
}
