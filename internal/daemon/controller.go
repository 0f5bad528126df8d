package daemon

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/pool"
	"halb/internal/round"
	"halb/internal/vip"
	"halb/internal/witness"
)

// reconcileEvery bounds how stale a decision can get when no event fires,
// e.g. for a node becoming stable after preempt_delay.
const reconcileEvery = 200 * time.Millisecond

// controller runs the election loop: each round it gathers the inputs,
// has round.Decide plan, and applies the plan to gossip and announcers.
// It also keeps the node's own facts (maintenance, leaving, drill roles)
// and what the last round decided, for `halb status`.
type controller struct {
	log     *slog.Logger
	name    string // this node's name; fixed for the process
	version string
	srv     *serving
	// Nil without a cluster section: no gossip, no VIPs, no loop.
	cluster    *cluster.Cluster
	announcers []*announcer
	witness    *witness.Witness // nil without cluster.witness
	watchARP   bool             // watch the link for other hosts announcing a VIP (real links only)
	bgp        *bgpVIPs         // nil without a bgp section
	tickles    *tickles         // connection tables and tickle ACKs on takeover (tickles.go)
	handoffs   *handoffs        // flow hand-off on planned moves (handoff.go); nil if off

	wake     chan struct{} // coalesced requests for a round
	messages func([]byte)  // a peer's request: drills are the only kind
	watch    poolWatch     // forwards each pool's changes to the loop
	lastRun  atomic.Int64  // unix nanoseconds of the last finished round, for the watchdog
	feed     *eventFeed    // VIP and member events (events.go); nil publishes none

	mu    sync.Mutex
	facts facts
	view  view
	dead  deadness // a hard drill's closed listeners and silent VIPs (playdead.go)
}

// facts are what only this node knows about itself, set by the operator,
// drills and the stop; guarded by controller.mu.
type facts struct {
	started    time.Time
	maintained bool        // operator maintenance: ineligible
	leaving    bool        // shutting down: ineligible so peers take the VIPs
	drill      round.Drill // until when this node yields, is boosted, is silent
}

// view is what the last round decided, for status and drills; guarded by
// controller.mu. Its maps are replaced, never changed, so a copy of the
// view may be read without the lock.
type view struct {
	holder   map[string]string    // VIP -> owner from the last round
	elected  map[string]time.Time // VIP -> when its owner last changed here
	preempt  map[string]time.Time // VIP -> when this node will preempt its owner; zero if not
	lastSeen map[string]time.Time // member -> last time it was alive here
}

// announcer pairs a VIP's config with the component holding it.
type announcer struct {
	cfg config.VIP
	a   *vip.Announcer
}

func newController(name, version string, srv *serving, log *slog.Logger) *controller {
	return &controller{
		log: log, name: name, version: version, srv: srv,
		wake: make(chan struct{}, 1),
		view: view{lastSeen: map[string]time.Time{}},
	}
}

// poke asks the control loop for a new round; it never blocks.
func (c *controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// update changes this node's facts and asks for a round.
func (c *controller) update(change func(*facts)) {
	c.mu.Lock()
	change(&c.facts)
	c.mu.Unlock()
	c.poke()
}

// snapshot returns this node's facts and the last round's view.
func (c *controller) snapshot() (facts, view) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.facts, c.view
}

// progressed reports whether a round finished within the last within: a
// loop that stalls must not keep feeding systemd's watchdog.
func (c *controller) progressed(now time.Time, within time.Duration) bool {
	return now.Sub(time.Unix(0, c.lastRun.Load())) <= within
}

// forward pokes the loop on every signal from the given channels until
// ctx ends; the returned channel is closed once every forwarder ended.
func (c *controller) forward(ctx context.Context, chans []<-chan struct{}) <-chan struct{} {
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					c.poke()
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// run runs the election until ctx ends. It waits for the first join
// (bounded) before claiming, so a node that starts before its peers does
// not take the VIP only to drop it when they appear.
func (c *controller) run(ctx context.Context) error {
	chans := []<-chan struct{}{c.cluster.Changed()}
	for _, a := range c.announcers {
		chans = append(chans, a.a.Changed())
	}
	if c.witness != nil {
		chans = append(chans, c.witness.Changed())
	}
	forwarding := c.forward(ctx, chans)
	defer func() { <-forwarding }()
	// Pools come and go with reloads: they are forwarded by c.watch.
	c.watch.start(ctx, c.poke)
	defer c.watch.wait()
	pools, _ := c.srv.parts()
	for _, p := range pools {
		c.watch.add(p)
	}

	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	var mem round.Memory
	ready := c.cluster.Ready()
	for {
		select {
		case <-ready:
			ready = nil // a nil channel never fires again
			c.log.Info("cluster ready: joined peers or join timeout passed", "members", len(c.cluster.Members()))
		default:
		}
		var wakeAt time.Time
		mem, wakeAt = c.reconcile(mem, ready == nil, time.Now())
		if !c.wait(ctx, wakeAt, tick.C, ready) {
			return nil
		}
	}
}

// wait blocks until the next round is due; false when ctx ended.
func (c *controller) wait(ctx context.Context, wakeAt time.Time, tick <-chan time.Time, ready <-chan struct{}) bool {
	var due <-chan time.Time
	if !wakeAt.IsZero() {
		timer := time.NewTimer(time.Until(wakeAt))
		defer timer.Stop()
		due = timer.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-c.wake:
	case <-tick:
	case <-due:
	case <-ready:
	case b := <-c.cluster.Messages():
		c.onMessage(b)
	}
	return true
}

// onMessage hands a request from a peer to its handler.
func (c *controller) onMessage(b []byte) {
	if c.messages != nil {
		c.messages(b)
	}
}

// reconcile runs one round of the election: it gathers the inputs,
// decides, and applies the plan; it returns the memory for the next round
// and when a pending decision needs one, zero for no such time.
func (c *controller) reconcile(mem round.Memory, ready bool, now time.Time) (round.Memory, time.Time) {
	c.reviveIfDue(now)
	in := c.gather(mem, ready, now)
	p := round.Decide(in, mem)
	c.apply(p, now)
	if c.bgp != nil {
		cfg, _ := c.srv.current()
		c.bgp.apply(round.DecideBGP(in, p, c.bgp.addrs()), now, cfg.Timeouts.Drain)
	}
	for _, a := range c.announcers {
		c.tickles.observe(a.cfg.Address.Addr(), a.a.Held())
	}
	c.lastRun.Store(time.Now().UnixNano())
	return p.Memory, p.WakeAt
}

// gather reads what a round decides on.
func (c *controller) gather(mem round.Memory, ready bool, now time.Time) round.Inputs {
	// One read: a reload swaps config and pools together.
	c.srv.mu.Lock()
	cfg, self, pools, running := c.srv.cfg, c.srv.self, c.srv.pools, c.srv.frontends
	c.srv.mu.Unlock()
	f, _ := c.snapshot()
	in := round.Inputs{Now: now, Self: c.name, Ready: ready, Local: round.Local{
		Started: f.started, Maintenance: f.maintained, Leaving: f.leaving, Drill: f.drill,
	}}
	in.Config = round.Config{
		Policy:       cfg.Cluster.Policy,
		Quorum:       cfg.Cluster.Quorum,
		PreemptDelay: cfg.Cluster.PreemptDelay,
		Eligibility:  cfg.Cluster.Eligibility,
		Priority:     self.Priority,
		Witness:      c.witness != nil,
		Fingerprint:  cfg.Fingerprint,
		Version:      c.version,
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
			Listening: f.f.ListenErr() == nil && f.gate.Load().listening(),
			Healthy:   pools[f.cfg.Backend].Healthy(),
		})
	}
	if c.witness != nil {
		in.Local.WitnessReachable = c.witness.Reachable()
	}
	for _, a := range c.announcers {
		st := a.a.Status()
		in.VIPs = append(in.VIPs, round.VIP{Addr: a.cfg.Address.Addr().String(), Held: st.Held, HeldSince: st.Since,
			Claiming: st.Owner && !st.Held})
	}
	if c.bgp != nil {
		in.Local.Announced = c.bgp.announced()
	}
	if !ready {
		return in
	}
	in.Local.Incompatible = len(c.cluster.Incompatible())
	for _, m := range c.cluster.Members() {
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

// apply carries a round's plan out: gossip, announcers, the view `halb
// status` shows, and the log.
func (c *controller) apply(p round.Plan, now time.Time) {
	if p.Publish != nil {
		c.cluster.SetLocal(*p.Publish)
	}
	if p.Alive == nil {
		return // not ready: nothing decided
	}
	if p.MembersChanged {
		c.log.Info("membership changed", "members", p.Alive)
	}
	for _, n := range p.Strangers {
		c.log.Warn("a member not in cluster.nodes gossips with the cluster key; it takes part in the election, but list it in every node's config (or remove its key)",
			"peer", n)
	}
	preempt := make(map[string]time.Time, len(p.VIPs))
	for i, v := range p.VIPs {
		a := c.announcers[i].a
		if v.Owner != v.Previous {
			c.log.Info("election result", "vip", v.VIP, "owner", v.Owner, "previous", v.Previous)
		}
		c.handoffs.owner(context.Background(), c.announcers[i].cfg.Address.Addr(), v.Owner, c.name, a.Held())
		switch v.Action {
		case round.Claim:
			if !a.Held() {
				// Forwarding first: the claim's ARP moves the clients.
				c.handoffs.claiming(context.Background(), c.announcers[i].cfg.Address.Addr(), aliveSet(p.Alive))
			}
			a.SetOwner(true, v.Reason)
		case round.Release:
			// Keeps the address quietly for a hand-off (handoff.go).
			c.handoffs.release(context.Background(), c.announcers[i].cfg.Address.Addr(), a, v.Reason)
		case round.Keep:
			c.log.Debug("VIP kept as it is", "vip", v.VIP, "why", v.Reason)
		}
		if v.Announce != "" {
			a.Reannounce(v.Announce)
		}
		if v.Regained {
			if n := c.tickles.tickleOwn(c.announcers[i].cfg.Address.Addr()); n > 0 {
				c.log.Info("another holder let go of the VIP: tickling this node's sessions through it, which that holder may have reset",
					"vip", v.VIP, "sessions", n)
			}
		}
		preempt[v.VIP] = v.PreemptAt
	}
	c.publishRound(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Copy on write: snapshot hands the maps out to read without the lock.
	seen := maps.Clone(c.view.lastSeen)
	for _, n := range p.Alive {
		seen[n] = now
	}
	c.view.lastSeen = seen
	var elected map[string]time.Time // copy on write, in a round that changes an owner
	for vip, owner := range p.Memory.Holder {
		if old, ok := c.view.holder[vip]; ok && old == owner {
			continue
		}
		if elected == nil {
			elected = maps.Clone(c.view.elected)
			if elected == nil {
				elected = map[string]time.Time{}
			}
		}
		elected[vip] = now
	}
	if elected != nil {
		c.view.elected = elected
	}
	c.view.holder = maps.Clone(p.Memory.Holder)
	c.view.preempt = preempt
}

// aliveSet turns a round's alive members into a set.
func aliveSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// handover makes this node ineligible and waits, bounded, until the VIPs it
// holds have been taken by a peer, so that removing them loses no connection.
func (c *controller) handover(ctx context.Context) {
	c.update(func(f *facts) { f.leaving = true })
	alive := 0
	for _, m := range c.cluster.Members() {
		if m.Alive {
			alive++
		}
	}
	if alive < 2 {
		return // nobody to hand over to
	}
	deadline := time.NewTimer(handoverTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.holdsOrClaims() {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			c.log.Warn("no peer took the VIPs in time; releasing them anyway", "timeout", handoverTimeout)
			return
		case <-tick.C:
		}
	}
}

// holdsOrClaims reports whether this node holds a VIP or was told to
// claim one: a claim under way may put the address on at any moment, and
// it is handed over like a held one.
func (c *controller) holdsOrClaims() bool {
	for _, a := range c.announcers {
		if st := a.a.Status(); st.Held || st.Owner {
			return true
		}
	}
	return false
}

// handoverTimeout bounds a graceful stop's wait for a peer to take over.
const handoverTimeout = 3 * time.Second
