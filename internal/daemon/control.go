package daemon

import (
	"context"
	"maps"
	"time"

	"halb/internal/pool"
	"halb/internal/round"
)

// reconcileEvery bounds how stale a decision can get when no event fires,
// e.g. for a node becoming stable after preempt_delay.
const reconcileEvery = 200 * time.Millisecond

// poke asks the control loop for a new round; it never blocks.
func (d *Daemon) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// control runs the election: gossip this node's state, compute each VIP's
// owner from every alive member's state, and claim or release. It waits for
// the first join (bounded) before claiming, so a node that starts before
// its peers does not take the VIP only to drop it when they appear.
func (d *Daemon) control(ctx context.Context) error {
	forward := func(ch <-chan struct{}) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				d.poke()
			}
		}
	}
	var fwd []<-chan struct{}
	fwd = append(fwd, d.cluster.Changed())
	// Pools come and go with reloads: they are forwarded by d.watch.
	d.watch.start(ctx, d.poke)
	defer d.watch.wait()
	pools, _ := d.parts()
	for _, p := range pools {
		d.watchPool(p)
	}
	for _, a := range d.announcers {
		fwd = append(fwd, a.a.Changed())
	}
	if d.witness != nil {
		fwd = append(fwd, d.witness.Changed())
	}
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		finished := make(chan struct{}, len(fwd))
		for _, ch := range fwd {
			go func() { forward(ch); finished <- struct{}{} }()
		}
		for range fwd {
			<-finished
		}
	}()

	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	var mem round.Memory
	ready := d.cluster.Ready()
	for {
		select {
		case <-ready:
			ready = nil // a nil channel never fires again
			d.log.Info("cluster ready: joined peers or join timeout passed", "members", len(d.cluster.Members()))
		default:
		}
		var wakeAt time.Time
		mem, wakeAt = d.reconcile(mem, ready == nil, time.Now())
		var due <-chan time.Time
		var timer *time.Timer
		if !wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(wakeAt))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-tick.C:
		case <-due:
		case <-ready:
		case b := <-d.cluster.Messages():
			d.handleMessage(b)
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// reconcile runs one round of the election: it gathers the inputs,
// decides, and applies the plan; it returns the memory for the next round
// and when a pending decision needs one, zero for no such time.
func (d *Daemon) reconcile(mem round.Memory, ready bool, now time.Time) (round.Memory, time.Time) {
	p := round.Decide(d.gather(mem, ready, now), mem)
	d.applyPlan(p, now)
	return p.Memory, p.WakeAt
}

// gather reads what a round decides on.
func (d *Daemon) gather(mem round.Memory, ready bool, now time.Time) round.Inputs {
	// One read: a reload swaps config and pools together.
	d.mu.Lock()
	cfg, self, pools, running := d.cfg, d.self, d.pools, d.frontends
	in := round.Inputs{Now: now, Self: d.name, Ready: ready, Local: round.Local{
		Started:     d.started,
		Maintenance: d.maintained,
		Leaving:     d.leaving,
		Drill:       d.drill.roles,
	}}
	d.mu.Unlock()
	in.Config = round.Config{
		Policy:       cfg.Cluster.Policy,
		Quorum:       cfg.Cluster.Quorum,
		PreemptDelay: cfg.Cluster.PreemptDelay,
		Eligibility:  cfg.Cluster.Eligibility,
		Priority:     self.Priority,
		Witness:      d.witness != nil,
		Fingerprint:  cfg.Fingerprint,
		Version:      d.opts.Version,
	}
	for _, n := range cfg.Cluster.Nodes {
		in.Config.Nodes = append(in.Config.Nodes, n.Name)
	}
	// Health known first, frontends second: a check result landing between
	// the two must not publish an eligibility computed before it.
	if !mem.Settled {
		in.Local.HealthKnown = healthKnown(pools)
	}
	for _, f := range running {
		in.Local.Frontends = append(in.Local.Frontends, round.Frontend{
			Name:      f.cfg.Name,
			Listening: f.f.ListenErr() == nil,
			Healthy:   pools[f.cfg.Backend].Healthy(),
		})
	}
	if d.witness != nil {
		in.Local.WitnessReachable = d.witness.Reachable()
	}
	for _, a := range d.announcers {
		st := a.a.Status()
		in.VIPs = append(in.VIPs, round.VIP{Addr: a.cfg.Address.Addr().String(), Held: st.Held, HeldSince: st.Since})
	}
	if !ready {
		return in
	}
	in.Local.Incompatible = len(d.cluster.Incompatible())
	for _, m := range d.cluster.Members() {
		in.Members = append(in.Members, round.Member{Name: m.Name, Alive: m.Alive, Local: m.Local,
			State: m.State, StateErr: m.StateErr != "", Since: m.Since})
	}
	return in
}

// healthKnown reports whether every server has a first check result.
func healthKnown(pools map[string]*pool.Pool) bool {
	for _, p := range pools {
		for _, s := range p.Servers() {
			if !s.Stats().Known {
				return false
			}
		}
	}
	return true
}

// applyPlan carries a round's plan out: gossip, announcers, the views
// `halb status` shows, and the log.
func (d *Daemon) applyPlan(p round.Plan, now time.Time) {
	if p.Publish != nil {
		d.cluster.SetLocal(*p.Publish)
	}
	if p.Alive == nil {
		return // not ready: nothing decided
	}
	if p.MembersChanged {
		d.log.Info("membership changed", "members", p.Alive)
	}
	for _, n := range p.Strangers {
		d.log.Warn("a member not in cluster.nodes gossips with the cluster key; it takes part in the election, but list it in every node's config (or remove its key)",
			"peer", n)
	}
	preempt := make(map[string]time.Time, len(p.VIPs))
	for i, v := range p.VIPs {
		a := d.announcers[i].a
		if v.Owner != v.Previous {
			d.log.Info("election result", "vip", v.VIP, "owner", v.Owner, "previous", v.Previous)
		}
		switch v.Action {
		case round.Claim:
			a.SetOwner(true, v.Reason)
		case round.Release:
			a.SetOwner(false, v.Reason)
		case round.Keep:
			d.log.Debug("VIP kept as it is", "vip", v.VIP, "why", v.Reason)
		}
		if v.Announce != "" {
			a.Reannounce(v.Announce)
		}
		preempt[v.VIP] = v.PreemptAt
	}
	d.mu.Lock()
	for _, n := range p.Alive {
		d.lastSeen[n] = now
	}
	d.holderView = maps.Clone(p.Memory.Holder)
	d.preemptView = preempt
	d.mu.Unlock()
}
