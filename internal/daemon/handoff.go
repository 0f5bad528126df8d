package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/handoff"
	"halb/internal/proxy"
	"halb/internal/vip"
)

// Flow hand-off on planned moves (docs/handoff.md): the holder offers its
// peers its hardware address; a peer that claims the VIP while the holder
// lives forwards every connection it did not see start to the holder,
// which keeps the address quietly and serves them until they close or the
// drain ends.

// offerEvery is how often a node sends its offers, like the tables.
const offerEvery = shareEvery

// doneFor is how long a node that finished a hand-off keeps saying so.
const doneFor = time.Second

// handoffs runs both sides of the hand-offs of this node's VIPs.
type handoffs struct {
	log     *slog.Logger
	net     connShare
	nft     handoff.Runner
	tickles *tickles
	clients func(dst []proxy.ClientPair) []proxy.ClientPair
	close   func(addr netip.Addr, reason string) int // close sessions to addr cleanly
	drain   func() time.Duration

	mu     sync.Mutex
	usable bool // nft works; decided at start
	vips   map[netip.Addr]*vipHandoff
}

// vipHandoff is one VIP's hand-off state.
type vipHandoff struct {
	on     bool
	ifname string
	ann    *vip.Announcer
	mac    net.HardwareAddr // this node's, on ifname; read at start
	// primary is ifname's own IPv4 address, the sender of this node's
	// ARP requests while it keeps the VIP quietly; read at start.
	primary netip.Addr

	offers map[string]handoff.Peer // peer -> its latest offer for this VIP

	fwd       *handoff.Forwarding // new holder: forwarding to fwd.Peer
	quiet     *handoff.Quiet      // old holder: serving handed-off connections
	doneUntil time.Time           // old holder: saying Done until then
	aborted   bool                // the last quiet attempt failed: say Aborted
	// clearKeep: a hand-off ended by the VIP coming back; the announcer
	// is told to stop keeping the address quietly once it holds it, so
	// the address never goes in between.
	clearKeep bool
	counted   bool // the old holder's first Handing offer was counted
	// arpEarly: the ARP rule is in place while this node still holds the
	// VIP, because the election named another owner (see owner).
	arpEarly bool

	st HandoffStatus
}

// HandoffStatus is one VIP's hand-off as this node sees it, for status
// and metrics.
type HandoffStatus struct {
	Role string // "forwarding", "handing off" or ""
	Peer string // the other side of the hand-off
	// HandedOff is how many connections the old holder had when the
	// hand-off started; Forwarded how many it still has (as last told);
	// ClosedAtDrain how many it closed when the drain ended.
	HandedOff, Forwarded, ClosedAtDrain int
	Since, Ended                        time.Time
	EndReason                           string
}

func newHandoffs(net connShare, vips []config.VIP, ifnames []string, anns []*announcer,
	t *tickles, srv *serving, log *slog.Logger) *handoffs {
	h := &handoffs{log: log.With("component", "handoff"), net: net, nft: handoff.NFT{}, tickles: t,
		clients: srv.clients, close: srv.closeClients,
		drain: func() time.Duration { cfg, _ := srv.current(); return cfg.Timeouts.Drain },
		vips:  map[netip.Addr]*vipHandoff{}}
	for _, a := range anns {
		addr := a.cfg.Address.Addr()
		for i, v := range vips {
			if v.Address.Addr() == addr {
				h.vips[addr] = &vipHandoff{on: v.Handoff, ifname: ifnames[i], ann: a.a,
					offers: map[string]handoff.Peer{}}
			}
		}
	}
	if t != nil {
		t.onOffer = h.receive
	}
	return h
}

// start removes the tables a crashed halb left and reads the interfaces'
// hardware addresses. Without nft, hand-off is off: moves tickle.
func (h *handoffs) start(ctx context.Context) {
	if h == nil || len(h.vips) == 0 {
		return
	}
	n, err := handoff.Cleanup(ctx, h.nft)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.log.Warn("flow hand-off off: nft does not work here; planned moves reset connections (tickles)", "err", err)
		return
	}
	if n > 0 {
		h.log.Info("removed hand-off tables left from an earlier run", "tables", n)
	}
	h.usable = true
	for addr, v := range h.vips {
		ifi, err := net.InterfaceByName(v.ifname)
		if err != nil {
			h.log.Warn("flow hand-off off for this VIP", "vip", addr, "iface", v.ifname, "err", err)
			v.on = false
			continue
		}
		v.mac = ifi.HardwareAddr
		addrs, _ := ifi.Addrs()
		v.primary = primaryAddr(addrs, addr)
	}
}

// claiming is called by the election loop just before it tells the
// announcer to claim addr: with the previous holder alive and offering,
// the forwarding is in place before the first gratuitous ARP moves any
// client here.
func (h *handoffs) claiming(ctx context.Context, addr netip.Addr, alive map[string]bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vips[addr]
	if !ok || !v.on || !h.usable || v.fwd != nil {
		return
	}
	now := time.Now()
	if v.quiet != nil {
		// The VIP comes back before its hand-off ended: the connections
		// are this node's own again.
		h.endQuiet(ctx, addr, v, "the VIP came back here", true, now)
	}
	peers := make([]handoff.Peer, 0, len(v.offers))
	for name, p := range v.offers {
		p.Alive = alive[name]
		peers = append(peers, p)
	}
	peer, ok := handoff.PickPeer(peers, now)
	if !ok {
		attrs := []any{"vip", addr}
		for _, p := range peers {
			attrs = append(attrs, p.Name, fmt.Sprintf("%s alive=%v heard %s ago", p.Offer.State, p.Alive, now.Sub(p.Heard).Round(time.Millisecond)))
		}
		h.log.Info("no alive peer offers a hand-off: connections of a previous holder are tickled", attrs...)
		return
	}
	var local []handoff.Flow
	for _, c := range h.clients(nil) {
		if c.Local.Addr() == addr {
			local = append(local, handoff.Flow{Client: c.Client, Port: c.Local.Port()})
		}
	}
	drain := h.drain()
	rules := handoff.ForwardRules{Iface: v.ifname, VIP: addr, Self: v.mac, Peer: peer.Offer.MAC, Local: local,
		Timeout: drain + handoff.Grace + time.Minute}
	if err := h.nft.Apply(ctx, rules.Script()); err != nil {
		h.log.Warn("cannot forward the previous holder's connections; they are tickled", "vip", addr, "peer", peer.Name, "err", err)
		return
	}
	v.fwd = &handoff.Forwarding{Peer: peer.Name, Since: now, Deadline: now.Add(drain + handoff.Grace),
		Cap: now.Add(2*drain + handoff.Grace)}
	v.st = HandoffStatus{Role: "forwarding", Peer: peer.Name, Since: now}
	v.counted = false
	h.tickles.handOff(addr, peer.Name)
	h.log.Info("forwarding the previous holder's connections to it", "vip", addr, "peer", peer.Name,
		"peer_mac", peer.Offer.MAC.String(), "iface", v.ifname, "own_connections", len(local))
}

// owner tells the hand-off who the election names for addr. While this
// node still holds the VIP for another owner that is about to claim it,
// it stops answering ARP for it at once: otherwise a client that asks
// between the new holder's claim and this node's release can be pointed
// back here and send a connection begun there to a node with no socket
// for it. If the move does not happen (the owner is this node again),
// the rule goes.
func (h *handoffs) owner(ctx context.Context, addr netip.Addr, owner string, self string, held bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vips[addr]
	if !ok || !v.on || !h.usable || v.quiet != nil {
		return
	}
	switch {
	case held && owner != "" && owner != self && !v.arpEarly:
		// No more gratuitous ARP from here, first: nft takes a while, and
		// a burst still running would point clients back at this node.
		v.ann.HandOff(true)
		if err := h.nft.Apply(ctx, handoff.QuietScript(addr, v.primary)); err != nil {
			h.log.Warn("cannot stop answering ARP for the VIP before the move", "vip", addr, "err", err)
			v.ann.HandOff(false)
			return
		}
		v.arpEarly = true
	case v.arpEarly && (owner == self || !held):
		if err := h.nft.Apply(ctx, handoff.DeleteQuietScript(addr)); err != nil {
			h.log.Warn("remove the hand-off ARP rule", "vip", addr, "err", err)
			return
		}
		v.arpEarly = false
		v.ann.HandOff(false)
	}
}

// release tells the announcer to release addr, keeping the address
// quietly while the connections handed off run when hand-off is on. Both
// happen under h.mu, so step never sees a hand-off whose VIP the election
// still wants here.
func (h *handoffs) release(ctx context.Context, addr netip.Addr, ann *vip.Announcer, reason string) {
	if h == nil {
		ann.SetOwner(false, reason)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	defer ann.SetOwner(false, reason)
	v, ok := h.vips[addr]
	if !ok || !v.on || !h.usable || v.quiet != nil || !ann.Held() {
		return
	}
	now := time.Now()
	if !v.arpEarly {
		if err := h.nft.Apply(ctx, handoff.QuietScript(addr, v.primary)); err != nil {
			h.log.Warn("cannot keep the VIP quietly; the new holder tickles the connections", "vip", addr, "err", err)
			v.aborted, v.doneUntil = true, now.Add(doneFor)
			return
		}
	}
	v.arpEarly = false
	v.ann.HandOff(true)
	open := h.open(addr)
	v.aborted = false
	v.quiet = &handoff.Quiet{Since: now, Deadline: now.Add(h.drain())}
	v.st = HandoffStatus{Role: "handing off", Since: now, HandedOff: open, Forwarded: open}
	h.tickles.setHanding(addr, true)
	h.log.Info("handing the VIP's connections off: keeping the address without ARP until they close",
		"vip", addr, "connections", open, "drain", h.drain())
}

// open counts this node's client connections through addr.
func (h *handoffs) open(addr netip.Addr) int {
	n := 0
	for _, c := range h.clients(nil) {
		if c.Local.Addr() == addr {
			n++
		}
	}
	return n
}

// endQuiet ends the old holder's side: the ARP rule goes, and the address
// with it unless the VIP is held again. Called with h.mu held.
func (h *handoffs) endQuiet(ctx context.Context, addr netip.Addr, v *vipHandoff, why string, reclaimed bool, now time.Time) {
	if err := h.nft.Apply(ctx, handoff.DeleteQuietScript(addr)); err != nil {
		h.log.Warn("remove the hand-off ARP rule", "vip", addr, "err", err)
	}
	if reclaimed {
		v.clearKeep = true
	} else {
		v.ann.HandOff(false)
	}
	h.tickles.setHanding(addr, false)
	v.quiet = nil
	if !reclaimed {
		// A hand-back says nothing: the other node's forwarding must go
		// on until it lost the VIP, and this node claims it now.
		v.doneUntil = now.Add(doneFor)
	}
	v.st.Role, v.st.Ended, v.st.EndReason = "", now, why
	h.log.Info("hand-off over", "vip", addr, "why", why, "handed_off", v.st.HandedOff, "closed_at_drain", v.st.ClosedAtDrain)
}

// endForward removes the new holder's forwarding. Called with h.mu held.
func (h *handoffs) endForward(ctx context.Context, addr netip.Addr, v *vipHandoff, why handoff.Stop, now time.Time) {
	if err := h.nft.Apply(ctx, handoff.DeleteScript("netdev", handoff.ForwardTable(addr))); err != nil {
		h.log.Warn("remove the hand-off forwarding", "vip", addr, "err", err)
	}
	peer := v.fwd.Peer
	v.fwd = nil
	v.st.Role, v.st.Ended, v.st.EndReason = "", now, why.String()
	tickled := 0
	if why.Tickle() {
		tickled = h.tickles.tickleFrom(addr, peer)
	} else {
		h.tickles.handOff(addr, "")
	}
	h.log.Info("stopped forwarding the previous holder's connections", "vip", addr, "peer", peer,
		"why", why.String(), "tickled", tickled)
}

// run sends the offers and steps both sides every offerEvery until ctx
// ends, then removes whatever forwarding is left.
func (h *handoffs) run(ctx context.Context) error {
	if h == nil || len(h.vips) == 0 {
		return nil
	}
	tick := time.NewTicker(offerEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			h.stopAll(context.WithoutCancel(ctx))
			return nil
		case now := <-tick.C:
			h.step(ctx, now)
		}
	}
}

// step advances every hand-off and sends the offers.
func (h *handoffs) step(ctx context.Context, now time.Time) {
	alive := map[string]bool{}
	var peers []string
	for _, m := range h.net.Members() {
		alive[m.Name] = m.Alive
		if m.Alive && !m.Local {
			peers = append(peers, m.Name)
		}
	}
	h.mu.Lock()
	var msgs [][]byte
	for addr, v := range h.vips {
		if !v.on || !h.usable {
			continue
		}
		st := v.ann.Status()
		if v.clearKeep && (st.Held || now.Sub(v.st.Ended) > time.Second) {
			v.ann.HandOff(false)
			v.clearKeep = false
		}
		if v.fwd != nil {
			h.stepForward(ctx, addr, v, st, alive, now)
		}
		if v.quiet != nil {
			h.stepQuiet(ctx, addr, v, st, now)
		}
		if o, ok := v.offer(addr, st.Held, now); ok {
			msgs = append(msgs, o.Marshal())
		}
	}
	h.mu.Unlock()
	for _, p := range peers {
		for _, b := range msgs {
			if err := h.net.SendConns(p, cluster.ConnsMsg{Kind: cluster.ConnsHandoff, Payload: b}); err != nil {
				h.log.Debug("send the hand-off offer", "peer", p, "err", err)
				break
			}
		}
	}
}

// stepForward advances the new holder's side: the old holder's counts
// from its offers, and whether to stop forwarding. h.mu is held.
func (h *handoffs) stepForward(ctx context.Context, addr netip.Addr, v *vipHandoff, st vip.Status, alive map[string]bool, now time.Time) {
	p := v.offers[v.fwd.Peer]
	p.Alive = alive[v.fwd.Peer]
	if !p.Heard.Before(v.fwd.Since) && p.Offer.State == handoff.Handing {
		if !v.counted {
			v.st.HandedOff, v.counted = int(p.Offer.Left), true
		}
		v.st.Forwarded = int(p.Offer.Left)
	}
	held := st.Held || st.Owner
	switch {
	case held:
		v.fwd.Lost = time.Time{}
	case v.fwd.Lost.IsZero():
		v.fwd.Lost = now
	}
	if stop := handoff.NextForward(*v.fwd, p, held, now); stop != handoff.Forward {
		h.endForward(ctx, addr, v, stop, now)
	}
}

// stepQuiet advances the old holder's side: close what is left when the
// drain is over, or end once nothing is. h.mu is held.
func (h *handoffs) stepQuiet(ctx context.Context, addr netip.Addr, v *vipHandoff, st vip.Status, now time.Time) {
	open := h.open(addr)
	v.st.Forwarded = open
	switch handoff.NextQuiet(*v.quiet, open, st.Owner, now) {
	case handoff.CloseRest:
		v.st.ClosedAtDrain = h.close(addr, "hand-off drain over")
		v.st.Forwarded = 0
		h.endQuiet(ctx, addr, v, "drain over: closed the rest cleanly", false, now)
	case handoff.EndQuiet:
		why := "every connection closed"
		if st.Owner {
			why = "the VIP came back here"
		}
		h.endQuiet(ctx, addr, v, why, st.Owner, now)
	}
}

// offer is what this node tells its peers about addr now; ok is false
// when it has nothing to say.
func (v *vipHandoff) offer(addr netip.Addr, held bool, now time.Time) (o handoff.Offer, ok bool) {
	o = handoff.Offer{VIP: addr, MAC: v.mac}
	switch {
	case held:
		o.State = handoff.Holding
	case v.quiet != nil:
		o.State, o.Left = handoff.Handing, uint32(v.st.Forwarded)
	case now.Before(v.doneUntil) && v.aborted:
		o.State = handoff.Aborted
	case now.Before(v.doneUntil):
		o.State = handoff.Done
	default:
		return o, false
	}
	return o, true
}

// receive takes a peer's offer.
func (h *handoffs) receive(m cluster.ConnsMsg) {
	o, err := handoff.ParseOffer(m.Payload)
	if err != nil {
		h.log.Debug("ignored a hand-off offer", "peer", m.From, "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.vips[o.VIP]; ok {
		v.offers[m.From] = handoff.Peer{Name: m.From, Offer: o, Heard: time.Now()}
	}
}

// quieting reports whether this node still serves handed-off connections.
func (h *handoffs) quieting() bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.vips {
		if v.quiet != nil {
			return true
		}
	}
	return false
}

// finish shortens every running hand-off of this stopping node to end by
// deadline, and waits for them to end: its connections close cleanly
// while their clients can still be reached, before the address goes.
func (h *handoffs) finish(ctx context.Context, deadline time.Time) {
	if h == nil {
		return
	}
	h.mu.Lock()
	for _, v := range h.vips {
		if v.quiet != nil && v.quiet.Deadline.After(deadline) {
			v.quiet.Deadline = deadline
		}
	}
	h.mu.Unlock()
	tick := time.NewTicker(offerEvery)
	defer tick.Stop()
	limit := time.NewTimer(time.Until(deadline) + 2*offerEvery)
	defer limit.Stop()
	for h.quieting() {
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-tick.C:
		}
	}
	// Let the peers hear Done before gossip leaves.
	select {
	case <-ctx.Done():
	case <-time.After(2 * offerEvery):
	}
}

// stopAll removes every table this node made, on the way out.
func (h *handoffs) stopAll(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for addr, v := range h.vips {
		if v.fwd != nil {
			h.endForward(ctx, addr, v, handoff.StopLost, now)
		}
		if v.quiet != nil {
			h.endQuiet(ctx, addr, v, "halb stopping", false, now)
		}
	}
}

// status is one VIP's hand-off for status.
func (h *handoffs) status(addr netip.Addr) HandoffStatus {
	if h == nil {
		return HandoffStatus{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.vips[addr]; ok {
		return v.st
	}
	return HandoffStatus{}
}

// primaryAddr picks, among an interface's addresses, the one the old holder
// names as sender in its own ARP requests or neighbour solicitations while
// it keeps vip quietly: the first of vip's family other than vip, for IPv6
// a global one before the link-local one. None: the zero Addr.
func primaryAddr(addrs []net.Addr, vip netip.Addr) netip.Addr {
	vip = vip.Unmap()
	var linkLocal netip.Addr
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if !ok || ip == vip || ip.Is4() != vip.Is4() {
			continue
		}
		if ip.IsLinkLocalUnicast() {
			if !linkLocal.IsValid() {
				linkLocal = ip
			}
			continue
		}
		return ip
	}
	return linkLocal
}
