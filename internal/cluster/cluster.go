package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Timing of the loops around memberlist.
const (
	rejoinInterval = time.Second // memberlist never re-merges a healed partition by itself
	// updateTimeout bounds UpdateNode's wait for a state broadcast to
	// leave this node. memberlist applies the state at once and only then
	// waits; with the only peer just dead the broadcast never leaves, and a
	// state set meanwhile — the claim after that very failover — would wait
	// this long to be advertised: a peer restarting then saw no holder and
	// claimed the VIP itself. The broadcast goes on without the wait.
	updateTimeout = 10 * time.Millisecond
	leaveTimeout  = time.Second // wait for the leave broadcast on shutdown
	// pushPullInterval is how often a node exchanges its whole member table
	// with a random peer, the backstop for any update gossip lost.
	pushPullInterval = 10 * time.Second
	gossipLabel      = "halb" // keeps other memberlist users on the same port (e.g. MetalLB on 7946) apart
	maxNameLen       = 128    // a node name travels in every gossip message
)

// Config says how this node gossips.
type Config struct {
	NodeName      string
	BindAddr      netip.Addr
	Port          int              // 0: the kernel picks one (tests)
	AdvertiseAddr netip.Addr       // zero: BindAddr
	Peers         []netip.AddrPort // the other configured nodes
	Key           []byte           // 16, 24 or 32 byte AES key; nil only when Insecure
	SecondaryKeys [][]byte         // more keys that decrypt but do not encrypt (key rotation)
	Insecure      bool
	Profile       string // "lan" (default) or "fast"
	// JoinTimeout is how long Ready waits for a first peer; 0 does not wait.
	JoinTimeout time.Duration
}

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	Alive bool // false once its heartbeats stopped and a direct probe failed (heartbeat.go)
	Local bool
	State State
	// StateErr is why the node's gossiped state did not decode, if it did not.
	StateErr  string
	LastHeard time.Time // last join, update or answered probe
	Since     time.Time // when it joined, as seen here; zero for the local node
	// HeardVia names a peer that still hears this member while this node
	// does not: a partial partition, so it is kept alive (heartbeat.go).
	HeardVia string
	// Disputed: memberlist declared it failed, but beats say it lives.
	Disputed bool
	// Watched: it is alive and a watch connection with it is open, so
	// its crash is noticed at once (watch.go).
	Watched bool
}

// Cluster is this node's membership in the gossip cluster.
type Cluster struct {
	cfg Config
	log *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	changed   chan struct{}
	update    chan struct{}
	started   atomic.Bool
	silence   atomic.Int64                  // unix nanoseconds until which gossip is dropped
	port      atomic.Int32                  // the bound gossip port, known once Run listens
	sockets   atomic.Pointer[gossipSockets] // set once Run listens, for Silence

	hb      *heartbeat // fast failure detection, ahead of memberlist's
	watches *watchSet  // connections whose end tells of a peer's death (watch.go)
	// noICMPHints: tests that must see the watches alone at work
	// turn the "port unreachable" hints off.
	noICMPHints bool

	// pushPull is the full state exchange's interval: pushPullInterval,
	// longer in tests that must see a lost update stay lost.
	pushPull time.Duration

	limits   *streamLimits // what an inbound gossip stream may cost (limits.go)
	refusals *refusalLog   // bounds the logging of refused gossip (refusals.go)

	mu     sync.Mutex
	local  State
	meta   []byte
	peers  map[string]*peer
	msgs   chan []byte                           // user messages from peers, dropped when full
	conns  chan ConnsMsg                         // connection-table messages (conns.go), dropped when full
	pulls  chan string                           // peers whose state to pull (digest.go)
	pulled atomic.Uint64                         // pulls started
	ml     atomic.Pointer[memberlist.Memberlist] // set while Run runs
	// keyring is memberlist's, shared with it; keysMu orders our edits.
	keyring *memberlist.Keyring
	keysMu  sync.Mutex
	// incompatible holds configured peers that answered a join but could
	// not gossip with us (wrong key, other label): proof they are alive.
	incompatible map[netip.AddrPort]string
}

type peer struct {
	since     time.Time // when it joined, as seen here
	addr      netip.AddrPort
	state     State
	stateErr  string
	metaSum   uint64    // digest of the gossiped state, to compare with its acks' (digest.go)
	stale     staleness // how long its acks have reported another state
	lastHeard time.Time
	// disputed: memberlist declared it failed, but its heartbeats say it
	// lives; it stays a member until they agree (heartbeat.go).
	disputed bool
}

// New validates cfg; it does no I/O.
func New(cfg Config, log *slog.Logger) (*Cluster, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	} else if len(cfg.NodeName) > maxNameLen {
		errs = append(errs, fmt.Errorf("node name %q is longer than %d bytes", cfg.NodeName, maxNameLen))
	}
	if !cfg.BindAddr.IsValid() {
		errs = append(errs, errors.New("bind address is not set"))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: want 0-65535", cfg.Port))
	}
	if !cfg.AdvertiseAddr.IsValid() {
		cfg.AdvertiseAddr = cfg.BindAddr
	}
	for _, p := range cfg.Peers {
		if !p.IsValid() || p.Port() == 0 {
			errs = append(errs, fmt.Errorf("peer %q is not ADDRESS:PORT", p))
		}
	}
	switch {
	case cfg.Insecure && cfg.Key != nil:
		errs = append(errs, errors.New("a gossip key was given but gossip is insecure"))
	case !cfg.Insecure && !slices.Contains([]int{16, 24, 32}, len(cfg.Key)):
		errs = append(errs, fmt.Errorf("gossip key is %d bytes: want 16, 24 or 32", len(cfg.Key)))
	}
	switch cfg.Profile {
	case "":
		cfg.Profile = "lan"
	case "lan", "fast":
	default:
		errs = append(errs, fmt.Errorf("profile %q: want lan or fast", cfg.Profile))
	}
	if cfg.JoinTimeout < 0 {
		errs = append(errs, fmt.Errorf("join timeout %s is negative", cfg.JoinTimeout))
	}
	errs = append(errs, keyErrors(cfg)...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	cfg.Peers = slices.Clone(cfg.Peers)
	cfg.Key = slices.Clone(cfg.Key)
	kr, err := newKeyring(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	c := &Cluster{
		keyring: kr,
		cfg:     cfg,
		log:     log,
		ready:   make(chan struct{}),
		changed: make(chan struct{}, 1),
		update:  make(chan struct{}, 1),
		msgs:    make(chan []byte, msgQueue),
		conns:   make(chan ConnsMsg, connsQueue),
		pulls:   make(chan string, 1),
		peers:   map[string]*peer{},
		hb:      newHeartbeat(cfg.Profile),
		watches: newWatchSet(),
		limits:  newStreamLimits(maxInboundStreams, maxStreamBytes),

		pushPull: pushPullInterval,
	}
	c.refusals = newRefusalLog(logBridge{log: log}, log, time.Now)
	c.meta, _ = EncodeState(State{}) // an empty state always fits
	return c, nil
}

// memberlistConfig builds memberlist's configuration for the chosen profile.
func (c *Cluster) memberlistConfig(port int) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	mc.BindAddr = c.cfg.BindAddr.String()
	mc.BindPort = port
	mc.AdvertiseAddr = c.cfg.AdvertiseAddr.String()
	mc.AdvertisePort = port
	mc.Label = gossipLabel

	// Failure detection: a dead peer is suspected after a missed probe and
	// declared dead after the suspicion timeout, about 1 s in total on "lan"
	// (0.5 s on "fast"), without false suspicion on a loaded LAN host.
	mc.ProbeInterval = 200 * time.Millisecond
	mc.ProbeTimeout = 100 * time.Millisecond
	if c.cfg.Profile == "fast" {
		mc.ProbeInterval = 100 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
	}
	// A suspect is declared dead after 3 probe intervals (scaled by log10 of
	// the cluster size); from three nodes up the timeout starts at twice that
	// and shrinks as other nodes confirm the suspicion.
	mc.SuspicionMult = 3
	mc.SuspicionMaxTimeoutMult = 2
	mc.GossipInterval = 50 * time.Millisecond
	mc.GossipNodes = 3 // every peer of a 2-3 node cluster hears each gossip round
	mc.PushPullInterval = c.pushPull
	mc.RetransmitMult = 3
	mc.IndirectChecks = 1                     // with two nodes there is no third to probe through
	mc.TCPTimeout = time.Second               // bounds joins and the TCP fallback probe
	mc.DeadNodeReclaimTime = 10 * time.Second // a node back with a new address is accepted
	mc.AwarenessMaxMultiplier = 2             // a loaded node stretches its own timeouts less

	mc.GossipVerifyIncoming = !c.cfg.Insecure
	mc.GossipVerifyOutgoing = !c.cfg.Insecure

	d := &delegate{c: c}
	mc.Delegate = d
	mc.Events = d
	mc.Ping = d
	mc.Conflict = d
	mc.Logger = c.refusals.logger()
	return mc
}

// Run joins the cluster and keeps this node in it until ctx is cancelled,
// then leaves. It returns nil on cancellation, and may be called once.
func (c *Cluster) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("cluster: Run called twice")
	}
	bind := netip.AddrPortFrom(c.cfg.BindAddr, uint16(c.cfg.Port))
	hint := c.unreachable
	if c.noICMPHints {
		hint = nil
	}
	nt, err := listenGossip(bind, c.refusals, hint, c.log)
	if err != nil {
		return fmt.Errorf("listen for gossip on %s: %w", bind, err)
	}
	tr := newSilenceTransport(nt, &c.silence, c.limits, c.refusals, c.acceptWatch, c.watchKeys)
	c.sockets.Store(nt)
	port := nt.Port()
	c.port.Store(int32(port))
	mc := c.memberlistConfig(port)
	mc.Transport = tr
	mc.Keyring = c.keyring
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return fmt.Errorf("start gossip on %s: %w", bind, err)
	}
	c.ml.Store(ml)
	defer c.ml.Store(nil)
	c.log.Info("gossip started", "addr", c.localAddr(),
		"profile", c.cfg.Profile, "encrypted", !c.cfg.Insecure, "peers", len(c.configuredPeers()))

	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); c.watchLoop(ctx) }()
	go func() { defer wg.Done(); c.joinLoop(ctx, ml) }()
	go func() { defer wg.Done(); c.pullLoop(ctx, ml) }()
	go func() { defer wg.Done(); c.updateLoop(ctx, ml) }()
	go func() { defer wg.Done(); c.heartbeatLoop(ctx, ml, nt) }()

	var joinTimeout <-chan time.Time
	if len(c.configuredPeers()) == 0 || c.cfg.JoinTimeout == 0 {
		c.markReady()
	} else {
		t := time.NewTimer(c.cfg.JoinTimeout)
		defer t.Stop()
		joinTimeout = t.C
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-joinTimeout:
			joinTimeout = nil
			select {
			case <-c.ready:
			default:
				c.log.Info("no peer answered within the join timeout: running alone until one does",
					"join_timeout", c.cfg.JoinTimeout)
				c.markReady()
			}
		}
	}
	wg.Wait()
	if err := ml.Leave(leaveTimeout); err != nil {
		c.log.Debug("leave broadcast not confirmed", "err", err)
	}
	if err := ml.Shutdown(); err != nil {
		c.log.Warn("stop gossip", "err", err)
	}
	// After the listener: a peer probing on the watch's end is refused,
	// and it has heard the leave by then.
	c.watches.closeAll(true)
	c.watches.wait()
	c.mu.Lock()
	clear(c.peers)
	c.mu.Unlock()
	c.notify()
	c.log.Info("gossip stopped")
	return nil
}

// joinLoop joins the configured peers that are not members, at once and then
// every rejoinInterval: a node that restarted, or the other half of a healed
// partition, is only found again this way.
func (c *Cluster) joinLoop(ctx context.Context, ml *memberlist.Memberlist) {
	// last is each peer's last outcome ("joined" or the error text), so a
	// peer that stays down is reported once, not every second.
	last := map[netip.AddrPort]string{}
	const joined = "joined"
	self := c.localAddr()
	tick := time.NewTicker(rejoinInterval)
	defer tick.Stop()
	for {
		// The peers recorded from events, not ml.Members(): memberlist hands
		// out pointers into its live node table, racing with its updates.
		present := map[netip.AddrPort]bool{}
		c.mu.Lock()
		for _, p := range c.peers {
			// A disputed member is joined again: that is how memberlist
			// learns it lives.
			present[p.addr] = !p.disputed
		}
		c.mu.Unlock()
		for _, p := range c.configuredPeers() {
			if ctx.Err() != nil {
				return
			}
			if present[p] || p == self {
				last[p] = joined
				continue
			}
			if _, err := ml.Join([]string{p.String()}); err != nil {
				err = flatten(err)
				c.setIncompatible(p, err)
				if msg := err.Error(); last[p] != msg {
					c.log.Warn("join peer failed; retrying every second", "peer", p, "err", err)
					last[p] = msg
				} else {
					c.log.Debug("join peer failed", "peer", p, "err", err)
				}
				continue
			}
			c.setIncompatible(p, nil)
			if last[p] != joined {
				c.log.Info("joined peer", "peer", p)
				last[p] = joined
			} else {
				c.log.Debug("joined peer again", "peer", p)
			}
			c.markReady()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// incompatibleErrs are the join errors that mean a peer answered but speaks
// with another key or label. Anything else (refused, timeout, reset by a
// silent or dying node) counts as absence: blocking a lone node's claim on
// a mere reset would keep the VIP from a cluster whose peer just crashed.
// memberlist formats its errors with %v, so they are matched as text.
var incompatibleErrs = []string{"decrypt", "encrypt", "keyring", "label"}

// setIncompatible records whether peer p answered a join with a key or
// label mismatch; any other outcome clears it.
func (c *Cluster) setIncompatible(p netip.AddrPort, err error) {
	msg := ""
	if err != nil {
		for _, k := range incompatibleErrs {
			if strings.Contains(strings.ToLower(err.Error()), k) {
				msg = err.Error()
				break
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if msg == "" {
		delete(c.incompatible, p)
		return
	}
	if c.incompatible == nil {
		c.incompatible = map[netip.AddrPort]string{}
	}
	if _, known := c.incompatible[p]; !known {
		c.log.Error("peer answers but cannot gossip with this node: is the gossip key the same on every node?", "peer", p, "err", msg)
	}
	c.incompatible[p] = msg
}

// Incompatible returns the configured peers that answered the last join
// attempt but could not gossip with this node, with the error. A node that
// is alone but has such peers must not act as a cluster of one: the others
// are alive and may hold the VIP.
func (c *Cluster) Incompatible() map[netip.AddrPort]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.incompatible)
}

// advertiser is what updateLoop needs of memberlist.
type advertiser interface {
	UpdateNode(timeout time.Duration) error
	LocalNode() *memberlist.Node
}

// readvertiseEvery is how often updateLoop checks that memberlist
// advertises the state last set.
const readvertiseEvery = time.Second

// updateLoop re-advertises the local state after SetLocal; UpdateNode may
// wait a moment for the broadcast, so it runs here rather than in the
// caller. memberlist
// can keep an older state than the last UpdateNode: a refutation racing
// with it re-broadcasts the state it had at a higher incarnation, and the
// update is then dropped as older, so peers would see a stale state until
// the next change. The loop therefore also checks, every
// readvertiseEvery, that what memberlist advertises is the state set.
func (c *Cluster) updateLoop(ctx context.Context, ml advertiser) {
	check := time.NewTicker(readvertiseEvery)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.update:
		case <-check.C:
			c.mu.Lock()
			want := c.meta
			c.mu.Unlock()
			// Only this goroutine updates the local node, so its
			// metadata can be read here without memberlist's lock.
			if bytes.Equal(ml.LocalNode().Meta, want) {
				continue
			}
			c.log.Info("re-advertising the local state: gossip kept an older one")
		}
		// Not waiting for the broadcast to leave is the point of the short
		// timeout: the error says only that it has not left yet.
		_ = ml.UpdateNode(updateTimeout)
	}
}

// flatten turns memberlist's multi-line multierror into a one-line error,
// keeping the inner errors for errors.Is.
func flatten(err error) error {
	var multi interface{ WrappedErrors() []error }
	if !errors.As(err, &multi) {
		return err
	}
	inner := multi.WrappedErrors()
	if len(inner) == 1 {
		return inner[0]
	}
	return oneLine{errs: inner}
}

// oneLine joins errors with "; " instead of errors.Join's newlines.
type oneLine struct{ errs []error }

func (e oneLine) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e oneLine) Unwrap() []error { return e.errs }

func (c *Cluster) markReady() {
	c.readyOnce.Do(func() { close(c.ready) })
}

// notify signals Changed without ever blocking: memberlist calls the
// delegates with its locks held.
func (c *Cluster) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Ready is closed after the first successful join to (or by) a peer, or once
// JoinTimeout passed without one: a lone node is a valid cluster of one.
// Callers wait on it before claiming a VIP, so that a node starting before its
// peers does not grab a VIP only to drop it a moment later.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// Changed delivers a coalesced signal after members joined, left or changed
// state; read Members after it fires.
func (c *Cluster) Changed() <-chan struct{} { return c.changed }

// SetPeers replaces the configured peers, as after a reload: the join
// loop tries the new ones within a second; members that are no longer
// configured stay until they leave.
func (c *Cluster) SetPeers(peers []netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Peers = slices.Clone(peers)
}

func (c *Cluster) configuredPeers() []netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Peers
}

// SetLocal sets the state this node gossips. Peers see it within about one
// gossip interval. It does not block and is safe to call before Run and after
// it returned. A state too large for memberlist's metadata drops, in order,
// the Holder view, the Frontends detail and the version strings.
func (c *Cluster) SetLocal(s State) {
	s = cloneState(s)
	meta, err := EncodeState(s)
	for _, shrink := range []func(*State){
		func(s *State) { s.Holder = nil },
		func(s *State) { s.Frontends = nil },
		func(s *State) { s.Fingerprint, s.Version = "", "" },
	} {
		if err == nil {
			break
		}
		shrink(&s)
		meta, err = EncodeState(s)
	}
	if err != nil {
		c.log.Error("local state does not fit in gossip metadata: keeping the previous one", "err", err)
		return
	}
	c.mu.Lock()
	c.local = s
	same := bytes.Equal(meta, c.meta)
	c.meta = meta
	c.mu.Unlock()
	if same {
		return
	}
	select {
	case c.update <- struct{}{}:
	default:
	}
}

// msgQueue bounds the peer messages waiting for the daemon.
const msgQueue = 16

// Send delivers msg to the member called node over gossip's reliable (TCP)
// channel; it fails when the node is not a member or gossip is not running.
func (c *Cluster) Send(node string, msg []byte) error {
	ml := c.ml.Load()
	if ml == nil {
		return errors.New("gossip is not running")
	}
	// From our own table, not ml.Members(): that one races with memberlist.
	c.mu.Lock()
	p, ok := c.peers[node]
	var addr netip.AddrPort
	if ok {
		addr = p.addr
	}
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("send to %s: not a member", node)
	}
	n := &memberlist.Node{Name: node, Addr: addr.Addr().AsSlice(), Port: addr.Port()}
	if err := ml.SendReliable(n, msg); err != nil {
		return fmt.Errorf("send to %s: %w", node, err)
	}
	return nil
}

// Messages delivers what peers sent with Send, in arrival order.
func (c *Cluster) Messages() <-chan []byte { return c.msgs }

// Silence makes this node play dead for d, as if its process had been
// killed: it drops all gossip, sends no heartbeats and closes its gossip
// sockets, so peers' probes are refused and they declare it dead at once;
// afterwards it opens them again and rejoins as a restarted process would
// (heartbeat.go). It is for failover drills.
func (c *Cluster) Silence(d time.Duration) {
	c.silence.Store(time.Now().Add(d).UnixNano())
	if s := c.sockets.Load(); s != nil {
		// At once, not at the heartbeat loop's next turn: a peer probing
		// meanwhile would find the port open and read a stall, not a
		// crash. The loop still waits for the readers (playDead).
		s.closeNow()
	}
	c.log.Warn("gossip silenced for a drill", "duration", d)
}

// Members returns the members memberlist lists, this node included, sorted
// by name; see Member.Alive for those the heartbeats gave up on.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.peers)+1)
	out = append(out, Member{
		Name:      c.cfg.NodeName,
		Addr:      c.localAddr(),
		Alive:     true,
		Local:     true,
		State:     cloneState(c.local),
		LastHeard: time.Now(),
	})
	for name, p := range c.peers {
		out = append(out, Member{
			Name:      name,
			Addr:      p.addr,
			Alive:     !c.hb.isDown(name),
			HeardVia:  c.hb.heardVia(name),
			Disputed:  p.disputed,
			Watched:   !c.hb.isDown(name) && c.watches.watching(name),
			State:     cloneState(p.state),
			StateErr:  p.stateErr,
			LastHeard: p.lastHeard,
			Since:     p.since,
		})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// localAddr is the advertised gossip address; its port is Config.Port until
// Run has bound the real one.
func (c *Cluster) localAddr() netip.AddrPort {
	port := c.cfg.Port
	if p := c.port.Load(); p != 0 {
		port = int(p)
	}
	return netip.AddrPortFrom(c.cfg.AdvertiseAddr, uint16(port))
}

func cloneState(s State) State {
	s.Frontends = maps.Clone(s.Frontends)
	s.Holds = slices.Clone(s.Holds)
	s.Holder = maps.Clone(s.Holder)
	return s
}

func nodeAddr(n *memberlist.Node) netip.AddrPort {
	a, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(a.Unmap(), n.Port)
}

// delegate receives memberlist's callbacks. memberlist calls them with its
// own locks held, so they only touch the Cluster's fields and never block.
type delegate struct {
	c *Cluster
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta returns the encoded local state; SetLocal keeps it within limit.
func (d *delegate) NodeMeta(limit int) []byte {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if len(d.c.meta) > limit {
		return nil // memberlist panics on oversize metadata
	}
	return slices.Clone(d.c.meta)
}

// NotifyMsg queues a peer's message; memberlist reuses the buffer, so it
// is copied, and a full queue drops the message rather than block gossip.
func (d *delegate) NotifyMsg(b []byte) {
	if d.c.receiveBeat(b) || d.c.receiveConns(b) {
		return
	}
	select {
	case d.c.msgs <- slices.Clone(b):
	default:
		d.c.log.Warn("dropped a message from a peer: queue full")
	}
}

func (d *delegate) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (d *delegate) LocalState(bool) []byte            { return nil }
func (d *delegate) MergeRemoteState(_ []byte, _ bool) {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	if n.Name == d.c.cfg.NodeName {
		return
	}
	d.c.log.Info("peer joined", "peer", n.Name, "addr", nodeAddr(n))
	d.c.setPeer(n)
	// Being joined by a peer counts as having found the cluster.
	d.c.markReady()
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	if n.Name == d.c.cfg.NodeName {
		return
	}
	d.c.setPeer(n)
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	if n.Name == d.c.cfg.NodeName {
		return
	}
	// A suspicion that outlived a healed partition, or one raised across a
	// partial partition, declares a node failed that is beating here or
	// heard by a peer that is: keeping it avoids a second VIP holder.
	// A node leaving on purpose (its state says so) goes at once.
	// Lock order: the peer table, then the detector (as Members).
	d.c.mu.Lock()
	p, known := d.c.peers[n.Name]
	d.c.hb.mu.Lock()
	keep := known && !p.state.Maintenance && d.c.hb.det.evidence(n.Name, time.Now())
	if !keep {
		d.c.hb.det.forget(n.Name)
	}
	d.c.hb.mu.Unlock()
	if keep {
		p.disputed = true
	} else {
		delete(d.c.peers, n.Name)
	}
	d.c.mu.Unlock()
	if keep {
		d.c.log.Warn("memberlist declared a peer failed, but its heartbeats say it lives: keeping it until they agree",
			"peer", n.Name, "addr", nodeAddr(n))
		return
	}
	d.c.log.Info("peer left or failed", "peer", n.Name, "addr", nodeAddr(n))
	d.c.notify()
}

// AckPayload is the digest of the state this node gossips (digest.go).
func (d *delegate) AckPayload() []byte {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return encodeDigest(d.c.meta)
}

func (d *delegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, payload []byte) {
	d.c.acked(n.Name, payload, time.Now())
}

func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.c.log.Warn("two nodes claim the same name: node names must be unique",
		"peer", existing.Name, "addr", nodeAddr(existing), "other_addr", nodeAddr(other))
}

// setPeer records a joined or updated peer and its decoded state.
func (c *Cluster) setPeer(n *memberlist.Node) {
	st, err := DecodeState(n.Meta)
	var stateErr string
	if err != nil {
		stateErr = err.Error()
	}
	now := time.Now()
	c.mu.Lock()
	old, known := c.peers[n.Name]
	since := now
	if known {
		since = old.since
	}
	c.peers[n.Name] = &peer{since: since, addr: nodeAddr(n), state: st, stateErr: stateErr, metaSum: metaSum(n.Meta), lastHeard: now}
	c.mu.Unlock()
	if err != nil && (!known || old.stateErr != stateErr) {
		c.log.Warn("peer state unreadable: treating it as ineligible", "peer", n.Name, "err", err)
	}
	c.notify()
}
