package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	opSilence = "silence" // the holder goes silent on gossip, as if crashed
	opEnd     = "end"     // yield and boost end now

	defaultDrillHold = 30 * time.Second
	maxDrillHold     = 5 * time.Minute
	defaultHardHold  = 5 * time.Second
)

// drillState is this node's part in drills, guarded by Daemon.mu.
type drillState struct {
	roles round.Drill // until when this node yields, is boosted, is silent
	// started is the drill this node asked for, to refuse a second one.
	started  *admin.DrillStart
	deadline time.Time
	from, to string
}

// StartDrill implements admin.Driller: it asks the VIP's holder to leave
// the election (or to go silent, for a hard drill) and the target to
// outrank everyone, so the election moves the VIP, make before break.
func (d *Daemon) StartDrill(req admin.DrillRequest) (admin.DrillStart, error) {
	if d.cluster == nil || len(d.announcers) == 0 {
		return admin.DrillStart{}, fmt.Errorf("this node has no cluster and no VIP to drill: %w", admin.ErrInvalid)
	}
	a := d.announcers[0]
	if req.VIP != "" {
		a = nil
		for _, x := range d.announcers {
			if x.cfg.Address.Addr().String() == admin.BareIP(req.VIP) {
				a = x
			}
		}
		if a == nil {
			return admin.DrillStart{}, fmt.Errorf("no VIP %q here: %w", req.VIP, admin.ErrNotFound)
		}
	}
	vip := a.cfg.Address.Addr().String()
	now := time.Now()
	d.mu.Lock()
	if d.drill.started != nil && now.Before(d.drill.deadline) {
		s := *d.drill.started
		d.mu.Unlock()
		return admin.DrillStart{}, fmt.Errorf("a drill is already running (VIP %s from %s to %s, started %s ago): end it first: %w",
			s.VIP, s.From, s.To, now.Sub(s.Started).Round(time.Second), admin.ErrInvalid)
	}
	holder := d.holderView[vip]
	d.mu.Unlock()
	if holder == "" {
		return admin.DrillStart{}, fmt.Errorf("nobody holds %s yet: nothing to move: %w", vip, admin.ErrInvalid)
	}
	var candidates []string
	best, bestPrio := "", -1
	for _, m := range d.cluster.Members() {
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
		return admin.DrillStart{}, fmt.Errorf("no node other than the holder %s is eligible: a drill would leave %s nowhere to go: %w", holder, vip, admin.ErrInvalid)
	case to == "":
		to = best
	case to == holder:
		return admin.DrillStart{}, fmt.Errorf("%s already holds %s: %w", to, vip, admin.ErrInvalid)
	case !slices.Contains(candidates, to):
		return admin.DrillStart{}, fmt.Errorf("%s is not an eligible member (eligible: %s): %w", to, strings.Join(candidates, ", "), admin.ErrInvalid)
	}
	if req.Hard && to != best {
		return admin.DrillStart{}, fmt.Errorf("a hard drill lets the election pick the successor, as a crash would (%s), so --to %s cannot be honoured: %w", best, to, admin.ErrInvalid)
	}
	hold := req.Hold
	switch {
	case hold <= 0 && req.Hard:
		hold = defaultHardHold
	case hold <= 0:
		hold = defaultDrillHold
	case hold > maxDrillHold:
		return admin.DrillStart{}, fmt.Errorf("hold %s is longer than %s: %w", hold, maxDrillHold, admin.ErrInvalid)
	}
	// Boost the target first, so that when the holder steps away the
	// election already points at the target. A hard drill boosts nobody:
	// a boost would preempt the holder at once and hide the detection.
	if !req.Hard {
		if err := d.sendDrill(to, drillMsg{Op: opBoost, For: hold}); err != nil {
			return admin.DrillStart{}, err
		}
	}
	op := opYield
	if req.Hard {
		op = opSilence
	}
	if err := d.sendDrill(holder, drillMsg{Op: op, For: hold}); err != nil {
		_ = d.sendDrill(to, drillMsg{Op: opEnd})
		return admin.DrillStart{}, err
	}
	start := admin.DrillStart{VIP: vip, From: holder, To: to, Hard: req.Hard, Started: now}
	d.mu.Lock()
	d.drill.started, d.drill.deadline = &start, now.Add(hold)
	d.drill.from, d.drill.to = holder, to
	d.mu.Unlock()
	d.log.Info("drill started", "vip", vip, "from", holder, "to", to, "hard", req.Hard, "hold", hold)
	return start, nil
}

// EndDrill implements admin.Driller: the holder rejoins the election and
// the target's boost ends. A silenced holder comes back when its silence
// runs out; it cannot hear the request before.
func (d *Daemon) EndDrill() error {
	d.mu.Lock()
	from, to := d.drill.from, d.drill.to
	running := d.drill.started != nil
	d.drill.started = nil
	d.mu.Unlock()
	if !running {
		return fmt.Errorf("no drill started on this node: %w", admin.ErrNotFound)
	}
	var errs []error
	for _, n := range []string{from, to} {
		if err := d.sendDrill(n, drillMsg{Op: opEnd}); err != nil && !strings.Contains(err.Error(), "not a member") {
			errs = append(errs, err)
		}
	}
	d.log.Info("drill ended", "from", from, "to", to)
	return errors.Join(errs...)
}

// sendDrill delivers m to node, or applies it here when node is this one.
func (d *Daemon) sendDrill(node string, m drillMsg) error {
	if node == d.name {
		d.applyDrill(m)
		return nil
	}
	m.ID, m.Sent = newRequestID(), time.Now()
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode drill request: %w", err)
	}
	if err := d.cluster.Send(node, b); err != nil {
		return fmt.Errorf("ask %s to %s: %w", node, m.Op, err)
	}
	return nil
}

// handleMessage applies a drill request from a peer; bad input is logged
// and dropped, never trusted.
func (d *Daemon) handleMessage(b []byte) {
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
	d.applyDrill(m)
}

func (d *Daemon) applyDrill(m drillMsg) {
	now := time.Now()
	d.mu.Lock()
	switch m.Op {
	case opYield:
		d.drill.roles.YieldUntil = now.Add(m.For)
	case opBoost:
		d.drill.roles.BoostUntil = now.Add(m.For)
	case opSilence:
		d.drill.roles.SilencedUntil = now.Add(m.For)
	case opEnd:
		d.drill.roles.YieldUntil, d.drill.roles.BoostUntil = time.Time{}, time.Time{}
	default:
		d.mu.Unlock()
		d.log.Warn("ignored an unknown drill request", "op", m.Op)
		return
	}
	d.mu.Unlock()
	d.log.Info("drill request", "op", m.Op, "for", m.For)
	if m.Op == opSilence {
		// As if crashed: stop talking; the next round (poked below) drops
		// the VIPs without a handover, see standDown.
		d.cluster.Silence(m.For)
	}
	d.poke()
}

// drillFlags reports this node's drill roles at now.
func (d *Daemon) drillFlags(now time.Time) (yield, boost, silenced bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.drill.roles
	return now.Before(r.YieldUntil), now.Before(r.BoostUntil), now.Before(r.SilencedUntil)
}
