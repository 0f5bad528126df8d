package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"halb/internal/admin"
	"halb/internal/bgp"
	"halb/internal/config"
	"halb/internal/round"
	"halb/internal/vip"
)

const (
	// bgpWithdrawTimeout bounds a graceful stop's wait for the election
	// loop to withdraw the BGP routes.
	bgpWithdrawTimeout = 3 * time.Second
	// bgpConverge is how long a stopping node keeps accepting new
	// connections after its withdrawal went out: routers take some
	// hundred milliseconds to drop the path (65-280 ms in the lab), and
	// flows they send meanwhile must not be refused.
	bgpConverge = time.Second
)

// bgpVIPs are this node's VIPs with announce: bgp. It puts each on its
// local interface (no ARP: the routers learn the VIP from the route) and
// announces it while round.DecideBGP says so. After a withdrawal it keeps
// the address for timeouts.drain, so sessions the routers sent here
// before finish, then removes it.
type bgpVIPs struct {
	log     *slog.Logger
	speaker *bgp.Speaker // nil when ann is a test's fake
	ann     bgp.Announcer
	link    vip.Link

	mu   sync.Mutex
	vips []*bgpVIP
}

// bgpVIP is one BGP VIP and what this node did with it; guarded by
// bgpVIPs.mu.
type bgpVIP struct {
	cfg       config.VIP
	route     bgp.Route
	addr      vip.Addr
	announced bool
	onLink    bool
	why       string
	since     time.Time // when announced last changed
	// withdrawnAt is when the address started draining; zero while it is
	// announced or not on the link.
	withdrawnAt time.Time
	lastErr     string
}

// newBGPVIPs builds the speaker of node self and its BGP VIPs; nil
// without a bgp section. It does no I/O.
func newBGPVIPs(cfg *config.Config, self config.Node, link vip.Link, log *slog.Logger) (*bgpVIPs, error) {
	if cfg.BGP == nil {
		return nil, nil
	}
	sc, err := bgp.ConfigFor(cfg.BGP, self)
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	sp, err := bgp.New(sc, log.With("component", "bgp"))
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	b := &bgpVIPs{log: log.With("component", "bgp"), speaker: sp, ann: sp, link: link}
	b.add(cfg.VIPs, self.Name)
	return b, nil
}

// add takes the VIPs with announce: bgp out of vips.
func (b *bgpVIPs) add(vips []config.VIP, node string) {
	for _, v := range vips {
		if v.Announce != config.AnnounceBGP {
			continue
		}
		a := v.Address.Addr().Unmap()
		b.vips = append(b.vips, &bgpVIP{
			cfg:   v,
			route: bgp.RouteFor(v, node),
			addr:  vip.Addr{Prefix: netip.PrefixFrom(a, a.BitLen()), Label: vip.Label(v.Interface)},
			why:   "not decided yet",
		})
	}
}

// addrs lists the VIPs' addresses, for round.DecideBGP.
func (b *bgpVIPs) addrs() []string {
	out := make([]string, len(b.vips))
	for i, v := range b.vips {
		out[i] = v.cfg.Address.Addr().String()
	}
	return out
}

// apply carries out a round's BGP plan: the address goes on the link
// before the route is announced, and comes off only drain after the
// route was withdrawn. A failed step is retried next round.
func (b *bgpVIPs) apply(plans []round.BGPPlan, now time.Time, drain time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, p := range plans {
		v := b.vips[i]
		v.why = p.Reason
		var err error
		if p.Announce {
			err = b.announce(v, now)
		} else {
			err = b.withdraw(v, now, drain)
		}
		b.setError(v, err)
	}
}

func (b *bgpVIPs) announce(v *bgpVIP, now time.Time) error {
	if !v.onLink {
		if err := b.link.AddrReplace(v.cfg.Interface, v.addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", v.addr.Prefix, v.cfg.Interface, err)
		}
		v.onLink = true
	}
	v.withdrawnAt = time.Time{}
	if v.announced {
		return nil
	}
	if err := b.ann.Announce(v.route); err != nil {
		return err
	}
	v.announced, v.since = true, now
	b.log.Info("announcing VIP by BGP", "vip", v.addr.Prefix, "why", v.why)
	return nil
}

func (b *bgpVIPs) withdraw(v *bgpVIP, now time.Time, drain time.Duration) error {
	if v.announced {
		if err := b.ann.Withdraw(v.addr.Prefix); err != nil {
			return err
		}
		v.announced, v.since = false, now
		b.log.Info("withdrew VIP from BGP; open sessions drain", "vip", v.addr.Prefix, "why", v.why, "drain", drain)
	}
	if !v.onLink {
		return nil
	}
	if v.withdrawnAt.IsZero() {
		v.withdrawnAt = now
	}
	if now.Sub(v.withdrawnAt) < drain {
		return nil
	}
	return b.remove(v)
}

// remove takes v's address off its link; b.mu is held.
func (b *bgpVIPs) remove(v *bgpVIP) error {
	if err := b.link.AddrDel(v.cfg.Interface, v.addr); err != nil {
		return fmt.Errorf("remove %s from %s: %w", v.addr.Prefix, v.cfg.Interface, err)
	}
	v.onLink, v.withdrawnAt = false, time.Time{}
	return nil
}

// setError records err, logging it when it changes so that a step
// retried every round does not flood the log.
func (b *bgpVIPs) setError(v *bgpVIP, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != v.lastErr {
		b.log.Warn("bgp VIP step failed; retrying", "vip", v.addr.Prefix, "err", err)
	}
	v.lastErr = msg
}

// anyAnnounced reports whether a route is still announced.
func (b *bgpVIPs) anyAnnounced() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vips {
		if v.announced {
			return true
		}
	}
	return false
}

// announced lists the addresses of the VIPs announced now, in config
// order; nil for none.
func (b *bgpVIPs) announced() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, v := range b.vips {
		if v.announced {
			out = append(out, v.cfg.Address.Addr().String())
		}
	}
	return out
}

// removeAll takes every address off its link, once the proxy has drained
// on stop.
func (b *bgpVIPs) removeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vips {
		if v.onLink {
			if err := b.remove(v); err != nil {
				b.log.Warn("VIP left on its interface", "vip", v.addr.Prefix, "err", err)
			}
		}
	}
}

// status is what `halb status` shows of BGP.
func (b *bgpVIPs) status() *admin.BGP {
	s := &admin.BGP{Peers: []admin.BGPPeer{}, VIPs: []admin.BGPVIP{}}
	if b.speaker != nil {
		for _, p := range b.speaker.PeerStates() {
			s.Peers = append(s.Peers, admin.BGPPeer{Address: p.Address.String(), ASN: p.ASN, State: p.State, Since: p.Since})
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vips {
		s.VIPs = append(s.VIPs, admin.BGPVIP{
			Address: v.cfg.Address.Addr().String(), Interface: v.cfg.Interface, Mode: string(config.AnnounceBGP),
			Announced: v.announced, Why: v.why, Since: v.since, Draining: !v.withdrawnAt.IsZero(), LastError: v.lastErr,
		})
	}
	return s
}

// withdrawBGP makes this node ineligible and waits, bounded, until the
// loop has withdrawn its routes and the routers have had bgpConverge to
// act on it, so that closing the listeners next refuses no new flow.
func (c *controller) withdrawBGP(ctx context.Context) {
	if c.bgp == nil {
		return
	}
	c.update(func(f *facts) { f.leaving = true })
	if !c.bgp.anyAnnounced() {
		return // nothing to withdraw, nothing for routers to converge on
	}
	deadline := time.NewTimer(bgpWithdrawTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.bgp.anyAnnounced() {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			c.log.Warn("BGP routes not withdrawn in time; the speaker's stop withdraws them", "timeout", bgpWithdrawTimeout)
			return
		case <-tick.C:
		}
	}
	converge := time.NewTimer(bgpConverge)
	defer converge.Stop()
	select {
	case <-ctx.Done():
	case <-converge.C:
	}
}
