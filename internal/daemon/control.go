package daemon

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/election"
)

// reconcileEvery bounds how stale a decision can get when no event fires,
// e.g. for a node becoming stable after preempt_delay.
const reconcileEvery = 200 * time.Millisecond

// handoverConfirm is how long an eligible holder keeps the VIP after it
// elected another holder, before letting go: longer than a state change
// takes to gossip, so a stale view cannot make two holders both let go.
const handoverConfirm = 250 * time.Millisecond

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// neighLocktime is a bit more than Linux's default neigh locktime (1 s):
// ARP answers within it of the last update are ignored.
const neighLocktime = 1100 * time.Millisecond

// settleTimeout bounds how long a peer without a readable state, or this
// node without health results, holds back claims.
const settleTimeout = 5 * time.Second

// healthSettled reports whether every server has a first check result, or
// the wait for them is over (a check that hangs must not block the VIP).
func (d *Daemon) healthSettled(now time.Time) bool {
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if now.Sub(started) >= settleTimeout {
		return true
	}
	pools, _ := d.parts()
	for _, p := range pools {
		for _, s := range p.Servers() {
			if !s.Stats().Known {
				return false
			}
		}
	}
	return true
}

// controller is the election loop's memory between rounds.
type controller struct {
	settled       bool // every server has had a first check, or the wait ended
	eligibleSince time.Time
	lastState     cluster.State
	stateSet      bool
	lastMembers   []string
	holder        map[string]string    // VIP -> owner computed in the last round
	preemptAt     map[string]time.Time // VIP -> when this node preempts its owner (see Daemon.preemptAt)
	handoverSince map[string]time.Time // VIP -> since when this holder has seen another owner hold it
	wakeAt        time.Time            // the next reconcile a pending decision needs; zero if none
	strangers     map[string]bool      // members not in cluster.nodes, already warned about
	contested     map[string]bool      // VIP -> another member claimed it in the last round
	lastListed    []string             // members listed in the last round, alive or not
	lateAnnounced map[string]bool      // VIP -> announced again once the locktime passed
}

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
	c := &controller{holder: map[string]string{}, preemptAt: map[string]time.Time{}, handoverSince: map[string]time.Time{}, strangers: map[string]bool{}, contested: map[string]bool{}, lateAnnounced: map[string]bool{}}
	ready := d.cluster.Ready()
	for {
		select {
		case <-ready:
			ready = nil // a nil channel never fires again
			d.log.Info("cluster ready: joined peers or join timeout passed", "members", len(d.cluster.Members()))
		default:
		}
		c.wakeAt = time.Time{}
		d.reconcile(c, ready == nil, time.Now())
		var due <-chan time.Time
		var timer *time.Timer
		if !c.wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(c.wakeAt))
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

// localState computes what this node gossips about itself.
func (d *Daemon) localState(c *controller, now time.Time) cluster.State {
	// One read: a reload swaps config and pools together.
	d.mu.Lock()
	cfg, self, pools, running := d.cfg, d.self, d.pools, d.frontends
	d.mu.Unlock()
	fronts := make(map[string]bool, len(cfg.Frontends))
	states := make([]frontendState, 0, len(running))
	for _, f := range running {
		st := frontendState{listening: f.f.ListenErr() == nil, healthy: pools[f.cfg.Backend].Healthy()}
		fronts[f.cfg.Name] = st.listening && st.healthy
		states = append(states, st)
	}
	eligible := eligibleByFrontends(cfg.Cluster.Eligibility, states)
	d.mu.Lock()
	leaving, maint := d.leaving, d.maintained
	d.mu.Unlock()
	yield, boost, silenced := d.drillFlags(now)
	if leaving || maint || yield || silenced {
		eligible = false
	}
	// A node that cannot reach the witness is probably the one cut off:
	// it must not hold the VIP while its peer may.
	if d.witness != nil && !d.witness.Reachable() {
		eligible = false
	}
	if !eligible {
		c.eligibleSince = time.Time{}
	} else if c.eligibleSince.IsZero() {
		c.eligibleSince = now
	}
	stable := eligible && now.Sub(c.eligibleSince) >= cfg.Cluster.PreemptDelay
	priority := self.Priority
	if boost && eligible {
		// A drill's target outranks everyone at once: it must not wait
		// for preempt_delay, which guards against flapping, not drills.
		priority, stable = boostPriority+self.Priority, true
	}
	var holds []string
	for _, a := range d.announcers {
		if a.a.Held() {
			holds = append(holds, a.cfg.Address.Addr().String())
		}
	}
	return cluster.State{
		Priority:    priority,
		Eligible:    eligible,
		Stable:      stable,
		Maintenance: maint || leaving,
		Frontends:   fronts,
		Holds:       holds,
		Holder:      maps.Clone(c.holder),
		Fingerprint: cfg.Fingerprint,
		Version:     d.opts.Version,
	}
}

// reconcile runs one round of the election and acts on its result.
func (d *Daemon) reconcile(c *controller, ready bool, now time.Time) {
	cfg, self := d.current()
	// Settled first, state second: a check result landing between the two
	// must not publish an eligibility computed before it.
	if !c.settled {
		c.settled = d.healthSettled(now)
	}
	if !c.settled {
		// Publishing "ineligible" before the first checks have answered
		// would let a peer elect itself on a state that is about to change.
		return
	}
	st := d.localState(c, now)
	if !c.stateSet || !reflect.DeepEqual(st, c.lastState) {
		d.cluster.SetLocal(st)
		c.lastState, c.stateSet = st, true
	}
	if !ready {
		return
	}
	members := d.cluster.Members()
	// Members whose heartbeats stopped are still listed until memberlist
	// removes them, but are gone for the election.
	names := make([]string, 0, len(members))
	listed := make([]string, 0, len(members)) // alive or not, for re-announcing
	d.mu.Lock()
	for _, m := range members {
		listed = append(listed, m.Name)
		if !m.Alive {
			continue
		}
		names = append(names, m.Name)
		d.lastSeen[m.Name] = now
	}
	d.mu.Unlock()
	membersChanged := !slices.Equal(names, c.lastMembers)
	if membersChanged && c.lastMembers != nil {
		d.log.Info("membership changed", "members", names)
	}
	// memberlist removing a member the heartbeat already gave up on
	// changes no election, but is worth a new announcement, as before.
	reannounce := membersChanged || (c.lastListed != nil && !slices.Equal(listed, c.lastListed))
	c.lastMembers, c.lastListed = names, listed

	quorum := 0
	if cfg.Cluster.Quorum {
		quorum = len(cfg.Cluster.Nodes)
	}
	opts := election.Options{Policy: cfg.Cluster.Policy, Quorum: quorum}
	// A peer that joined a moment ago may not have published its state
	// yet; claiming before it has would be deciding on half the facts.
	unsettled := ""
	for _, m := range members {
		if !m.Local && m.StateErr != "" && now.Sub(m.Since) < settleTimeout {
			unsettled = m.Name
		}
	}
	standDown := d.standDown(len(names), now)
	keyConflict := d.keyConflict(len(names))
	d.warnStrangers(c, cfg, names)

	// Every member's gossiped state, this node's fresh one included; only
	// Holds differs per VIP.
	states := make(map[string]cluster.State, len(members))
	base := make([]election.Member, 0, len(members))
	for _, m := range members {
		if !m.Alive {
			continue
		}
		s := m.State
		if m.Local {
			s = st
		}
		states[m.Name] = s
		base = append(base, election.Member{
			Name:     m.Name,
			Priority: s.Priority,
			// A peer whose state did not decode cannot prove its health.
			Eligible: s.Eligible && m.StateErr == "",
			Stable:   s.Stable && m.StateErr == "",
		})
	}
	for _, a := range d.announcers {
		addr := a.cfg.Address.Addr().String()
		em := slices.Clone(base)
		for i := range em {
			em[i].Holds = slices.Contains(states[em[i].Name].Holds, addr)
		}
		owner := election.Owner(em, opts)
		if standDown != "" || (keyConflict && !a.a.Held()) {
			owner = ""
		}
		if prev := c.holder[addr]; prev != owner {
			d.log.Info("election result", "vip", addr, "owner", owner, "previous", prev)
		}
		c.holder[addr] = owner
		c.preemptAt[addr] = d.preemptAt(em, opts, owner, st, c.eligibleSince, cfg.Cluster.PreemptDelay, standDown != "" || keyConflict)
		switch {
		case owner == d.name && unsettled != "" && !a.a.Held():
			d.log.Debug("not claiming yet: a peer's state is not known", "vip", addr, "peer", unsettled)
		case owner == d.name:
			a.a.SetOwner(true, fmt.Sprintf("elected (priority %d, policy %s)", self.Priority, opts.Policy))
		case !a.a.Held():
			a.a.SetOwner(false, "not elected")
		case standDown != "":
			a.a.SetOwner(false, standDown)
		case owner == "":
			a.a.SetOwner(false, "no quorum: a minority must not hold the VIP")
		case slices.Contains(states[owner].Holds, addr):
			// Make before break: release only once the new owner holds it.
			// An eligible node also waits handoverConfirm with the
			// election unchanged: two holders can each elect the other on
			// a stale view (one is stopping, the other has not heard yet)
			// and would both let go. A node giving up by choice lets go at
			// once, so one of the two always keeps the VIP.
			if st.Eligible {
				if c.handoverSince[addr].IsZero() {
					c.handoverSince[addr] = now
				}
				if at := c.handoverSince[addr].Add(handoverConfirm); now.Before(at) {
					c.wakeAt = earliest(c.wakeAt, at)
					break
				}
			}
			a.a.SetOwner(false, "handed over to "+owner)
		}
		if owner == d.name || !a.a.Held() || !slices.Contains(states[owner].Holds, addr) {
			c.handoverSince[addr] = time.Time{}
		}
		if reannounce && a.a.Held() {
			a.a.Reannounce("membership changed")
		}
		// A neighbour that confirmed the old holder's MAC less than its
		// ARP locktime ago (1 s on Linux) ignores the claim's burst; a
		// dead holder's kernel keeps answering for the VIP until the
		// address expires. One more announcement after the locktime
		// reaches those neighbours.
		if st := a.a.Status(); st.Held && !c.lateAnnounced[addr] && now.Sub(st.Since) >= neighLocktime {
			a.a.Reannounce("neighbours' ARP locktime passed since the claim")
			c.lateAnnounced[addr] = true
		} else if !st.Held {
			c.lateAnnounced[addr] = false
		}
		// Another holder that lets go may have been the last to announce
		// (it took over from this node while this one was frozen or cut
		// off): point the neighbours back here.
		contested := false
		for name, s := range states {
			if name != d.name && slices.Contains(s.Holds, addr) {
				contested = true
			}
		}
		if c.contested[addr] && !contested && owner == d.name && a.a.Held() {
			a.a.Reannounce("another holder released the VIP")
		}
		c.contested[addr] = contested
	}
	d.mu.Lock()
	d.holderView = maps.Clone(c.holder)
	d.preemptView = maps.Clone(c.preemptAt)
	d.mu.Unlock()
}

// preemptAt is when this node will take the VIP from owner once it has
// been eligible for preempt_delay, if nothing else changes; zero when it
// will not. Operators (and the chaos run's settle check) see a pending
// preemption coming instead of being surprised by it.
func (d *Daemon) preemptAt(em []election.Member, opts election.Options, owner string, st cluster.State,
	eligibleSince time.Time, delay time.Duration, blocked bool) time.Time {
	if blocked || owner == d.name || !st.Eligible || st.Stable || eligibleSince.IsZero() {
		return time.Time{}
	}
	em = slices.Clone(em)
	for i := range em {
		if em[i].Name == d.name {
			em[i].Stable = true
		}
	}
	if election.Owner(em, opts) != d.name {
		return time.Time{}
	}
	return eligibleSince.Add(delay)
}

// warnStrangers logs, once per name, a member with the gossip key that is
// not in cluster.nodes. It still takes part in the election: leaving it out
// here, while its own config counts it, would give two elections and two
// holders; the configs must be made to agree instead.
func (d *Daemon) warnStrangers(c *controller, cfg *config.Config, names []string) {
	for _, n := range names {
		if c.strangers[n] || slices.ContainsFunc(cfg.Cluster.Nodes, func(cn config.Node) bool { return cn.Name == n }) {
			continue
		}
		c.strangers[n] = true
		d.log.Warn("a member not in cluster.nodes gossips with the cluster key; it takes part in the election, but list it in every node's config (or remove its key)",
			"peer", n)
	}
}

// standDown says why this node must hold no VIP whatever the election
// says, or "". These are facts only this node knows about itself; they
// override rule 2 ("nobody eligible: the holder keeps it"), which would
// otherwise make a cut-off node a second holder.
func (d *Daemon) standDown(members int, now time.Time) string {
	cfg, _ := d.current()
	if _, _, silenced := d.drillFlags(now); silenced {
		return "hard drill: silent as if crashed"
	}
	if members > 1 {
		return ""
	}
	if d.witness != nil && !d.witness.Reachable() && len(cfg.Cluster.Nodes) > 1 {
		return "alone and the witness is unreachable: this node is the one cut off"
	}
	return ""
}

// frontendState is what eligibility needs to know of one frontend.
type frontendState struct {
	listening bool // its listener accepts connections
	healthy   bool // its backend has a server to send them to
}

// eligibleByFrontends decides from its frontends whether a node may hold
// the VIPs. Every frontend must listen, whatever the policy: clients of a
// port nobody listens on here are refused, where another node would serve
// them. Then every frontend's backend must be healthy, or with policy
// any_frontend at least one.
func eligibleByFrontends(policy string, fronts []frontendState) bool {
	healthy := 0
	for _, f := range fronts {
		if !f.listening {
			return false
		}
		if f.healthy {
			healthy++
		}
	}
	if policy == "any_frontend" {
		return healthy > 0
	}
	return healthy == len(fronts)
}
