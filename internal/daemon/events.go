package daemon

import (
	"context"
	"slices"
	"time"

	"halb/internal/admin"
	"halb/internal/events"
	"halb/internal/hooks"
	"halb/internal/pool"
	"halb/internal/round"
)

var _ admin.EventSource = (*operatorAPI)(nil)

// Subscribe implements admin.EventSource.
func (o *operatorAPI) Subscribe(since time.Time) ([]events.Event, *events.Sub) {
	return o.srv.bus.Subscribe(since)
}

// observe publishes p's server transitions as events. The observer runs
// on health runners and the dial path; Publish never blocks them.
func (s *serving) observe(p *pool.Pool) {
	bus := s.bus
	if bus == nil {
		return
	}
	p.SetObserver(func(t pool.Transition) {
		k := events.ServerDown
		if t.Up {
			k = events.ServerUp
		}
		bus.Publish(events.Event{Kind: k, Node: s.node, Backend: t.Backend, Server: t.Server, Reason: t.Reason})
	})
}

// eventFeed turns what the election loop sees into events: the VIPs held
// here and the members alive. Only the loop's goroutine uses it.
type eventFeed struct {
	bus   *events.Bus
	node  string
	held  map[string]bool // VIP -> held here at the last round
	alive []string        // alive members at the last ready round
}

// vipEvents publishes a claim or release for each VIP whose held state
// changed since the last round; held is read from the announcers, so an
// event means the address really came or went.
func (f *eventFeed) vipEvents(p round.Plan, held map[string]bool) {
	if f == nil {
		return
	}
	reason := map[string]string{}
	for _, v := range p.VIPs {
		reason[v.VIP] = v.Reason
	}
	for vip, h := range held {
		if f.held[vip] == h || (!h && f.held == nil) {
			continue
		}
		k := events.VIPReleased
		if h {
			k = events.VIPClaimed
		}
		f.bus.Publish(events.Event{Kind: k, Node: f.node, VIP: vip, Reason: reason[vip]})
	}
	f.held = held
}

// memberEvents publishes who joined, left (gone from the member list) and
// failed (listed, but not alive) since the last ready round.
func (f *eventFeed) memberEvents(p round.Plan) {
	if f == nil || p.Alive == nil {
		return
	}
	if f.alive != nil {
		for _, n := range p.Alive {
			if !slices.Contains(f.alive, n) {
				f.bus.Publish(events.Event{Kind: events.MemberJoined, Node: n, Reason: "alive in gossip"})
			}
		}
		for _, n := range f.alive {
			switch {
			case slices.Contains(p.Alive, n):
			case slices.Contains(p.Memory.Listed, n):
				f.bus.Publish(events.Event{Kind: events.MemberFailed, Node: n, Reason: "stopped answering gossip"})
			default:
				f.bus.Publish(events.Event{Kind: events.MemberLeft, Node: n, Reason: "left the cluster"})
			}
		}
	}
	f.alive = slices.Clone(p.Alive)
}

// publishRound publishes the events of a round the loop just applied.
func (c *controller) publishRound(p round.Plan) {
	if c.feed == nil {
		return
	}
	held := make(map[string]bool, len(c.announcers))
	for _, a := range c.announcers {
		held[a.cfg.Address.Addr().String()] = a.a.Held()
	}
	c.feed.vipEvents(p, held)
	c.feed.memberEvents(p)
}

// runHooks feeds the bus to the hook runner until ctx ends. Hooks get
// their own context so that the VIP release of a stop still runs its hook
// while the rest winds down.
func (d *Daemon) runHooks(ctx context.Context) (stop func()) {
	cfg, _ := d.srv.current()
	if len(cfg.Hooks) == 0 {
		return func() {}
	}
	r := hooks.New(cfg.Hooks, nil, d.log.With("component", "hooks"))
	ctx, cancel := context.WithCancel(ctx)
	_, sub := d.srv.bus.Subscribe(time.Time{})
	done := make(chan struct{}, 2)
	go func() { _ = r.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-sub.C():
				if n := sub.Dropped(); n > 0 {
					d.log.Warn("hooks missed events: the hook feed fell behind", "lost", n)
				}
				r.Handle(e)
			}
		}
	}()
	return func() { cancel(); sub.Close(); <-done; <-done }
}
