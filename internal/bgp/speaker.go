package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"halb/internal/smallfile"
)

// Defaults and limits of a session.
const (
	// DefaultPort is BGP's well-known TCP port.
	DefaultPort = 179
	// DefaultHoldTime is short because a hung node (not a crashed one:
	// its kernel closes the session at once) keeps attracting its share of
	// flows until the hold time runs out; docs/bgp.md has the trade-off.
	DefaultHoldTime = 9 * time.Second
	// MinHoldTime is RFC 4271's lower bound for a non-zero hold time.
	MinHoldTime = 3 * time.Second
	// MaxHoldTime is the largest hold time the OPEN message can carry.
	MaxHoldTime = 65535 * time.Second

	// connectRetry is how soon a failed dial is retried. GoBGP's default of
	// two minutes would leave a node unannounced that long after a router
	// restart.
	connectRetry = 5 * time.Second
	// stopTimeout bounds the withdrawals and session shutdown of Run's end.
	stopTimeout = 5 * time.Second
	// maxPasswordSize is the kernel's TCP_MD5SIG_MAXKEYLEN.
	maxPasswordSize = 80
)

// Peer is one router the Speaker dials.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	Port    uint16 // 0: DefaultPort
	// Local is the session's source address; invalid: the kernel picks.
	Local netip.Addr
	// PasswordFile holds the TCP MD5 signature (RFC 2385) password on its
	// first line; "" for none. It is read when Run starts.
	PasswordFile string
	HoldTime     time.Duration // 0: DefaultHoldTime; whole seconds
	Keepalive    time.Duration // 0: a third of the hold time; whole seconds
}

// Config configures a Speaker.
type Config struct {
	LocalASN uint32
	RouterID netip.Addr // an IPv4 address, unique among the routers' peers
	// ListenPort is where peers may dial in; 0 does not listen, so halb
	// only dials its peers and needs no privileged port.
	ListenPort uint16
	// NextHop is the next hop of IPv4 routes and NextHop6 of IPv6 routes,
	// normally the node's own address; invalid: the session's own source
	// address, which GoBGP fills in.
	NextHop  netip.Addr
	NextHop6 netip.Addr
	Peers    []Peer
}

// Attributes are the path attributes a VIP is announced with.
type Attributes struct {
	// Communities are RFC 1997 communities, ASN<<16 | value.
	Communities []uint32
	// LocalPref is sent when set; only iBGP peers (same ASN) read it.
	LocalPref *uint32
	// MED is sent when set; routers compare it between paths from the
	// same neighbouring AS, which is how a backup node loses to a primary.
	MED *uint32
}

// Route is one announced prefix.
type Route struct {
	Prefix netip.Prefix // a host prefix: /32 or /128
	Attributes
}

// Announcer is what a caller that decides which VIPs to announce needs of
// a Speaker; the daemon uses it so its decisions can be tested with a fake.
type Announcer interface {
	// Announce adds or replaces the route for r.Prefix.
	Announce(r Route) error
	// Withdraw removes the route for p; withdrawing a prefix that is not
	// announced is not an error.
	Withdraw(p netip.Prefix) error
}

// PeerState is one session as the Speaker last saw it.
type PeerState struct {
	Address netip.Addr
	ASN     uint32
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string
	// Since is when the session entered State; zero before Run.
	Since time.Time
}

// Established reports whether routes flow over the session.
func (p PeerState) Established() bool { return p.State == "established" }

// Speaker announces routes to its peers with an embedded GoBGP server.
//
// GoBGP keeps its route-selection options in package variables, which
// every server sets as it starts: run one Speaker per process (tests that
// run a second GoBGP server start it after this one's Started).
type Speaker struct {
	cfg     Config
	log     *slog.Logger
	started chan struct{}
	changed chan struct{}

	mu    sync.Mutex
	srv   *server.BgpServer // non-nil while Run is between start and stop
	want  map[netip.Prefix]Route
	paths map[netip.Prefix][]byte // GoBGP's id of each path in srv

	stateMu sync.Mutex
	states  map[netip.Addr]PeerState
}

var _ Announcer = (*Speaker)(nil)

// New checks cfg and returns a Speaker that does nothing until Run.
func New(cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.Peers = slices.Clone(cfg.Peers)
	states := map[netip.Addr]PeerState{}
	for i, p := range cfg.Peers {
		if p.Port == 0 {
			cfg.Peers[i].Port = DefaultPort
		}
		if p.HoldTime == 0 {
			cfg.Peers[i].HoldTime = DefaultHoldTime
		}
		if p.Keepalive == 0 {
			cfg.Peers[i].Keepalive = max(cfg.Peers[i].HoldTime/3/time.Second*time.Second, time.Second)
		}
		states[p.Address] = PeerState{Address: p.Address, ASN: p.ASN, State: "idle"}
	}
	return &Speaker{
		cfg:     cfg,
		log:     log.With("component", "bgp"),
		started: make(chan struct{}),
		changed: make(chan struct{}, 1),
		want:    map[netip.Prefix]Route{},
		paths:   map[netip.Prefix][]byte{},
		states:  states,
	}, nil
}

func (c Config) check() error {
	var errs []error
	if c.LocalASN == 0 {
		errs = append(errs, errors.New("local ASN is 0"))
	}
	if !c.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("router id %v: want an IPv4 address", c.RouterID))
	}
	if c.NextHop.IsValid() && !c.NextHop.Is4() {
		errs = append(errs, fmt.Errorf("next hop %v: want an IPv4 address", c.NextHop))
	}
	if c.NextHop6.IsValid() && !c.NextHop6.Is6() {
		errs = append(errs, fmt.Errorf("IPv6 next hop %v: want an IPv6 address", c.NextHop6))
	}
	if len(c.Peers) == 0 {
		errs = append(errs, errors.New("no peers"))
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		switch {
		case !p.Address.IsValid():
			errs = append(errs, errors.New("a peer has no address"))
			continue
		case seen[p.Address]:
			errs = append(errs, fmt.Errorf("peer %s is listed twice", p.Address))
		default:
			if err := p.check(); err != nil {
				errs = append(errs, err)
			}
		}
		seen[p.Address] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp speaker: %w", err)
	}
	return nil
}

// check reports the first thing wrong with an addressed peer: its ASN or
// timers. A zero timer takes the default.
func (p Peer) check() error {
	hold := cmp.Or(p.HoldTime, DefaultHoldTime)
	switch {
	case p.ASN == 0:
		return fmt.Errorf("peer %s: ASN is 0", p.Address)
	case p.HoldTime != 0 && (p.HoldTime < MinHoldTime || p.HoldTime > MaxHoldTime || p.HoldTime%time.Second != 0):
		return fmt.Errorf("peer %s: hold time %s: want whole seconds from %s to %s", p.Address, p.HoldTime, MinHoldTime, MaxHoldTime)
	case p.Keepalive != 0 && (p.Keepalive < time.Second || p.Keepalive%time.Second != 0):
		return fmt.Errorf("peer %s: keepalive %s: want whole seconds, at least 1s", p.Address, p.Keepalive)
	case p.Keepalive != 0 && p.Keepalive >= hold:
		return fmt.Errorf("peer %s: keepalive %s is not shorter than the hold time %s", p.Address, p.Keepalive, hold)
	}
	return nil
}

// Started is closed once Run has started the BGP server and added the
// peers; routes announced before then are sent from that moment on.
func (s *Speaker) Started() <-chan struct{} { return s.started }

// Changed receives a value after a session changes state; changes
// coalesce, so a slow reader sees one value for many changes.
func (s *Speaker) Changed() <-chan struct{} { return s.changed }

// Run starts the BGP server, dials the peers and announces the routes
// asked for, until ctx ends. Then it withdraws every route, closes the
// sessions with a Cease notification and returns nil. A caller that wants
// to drain before the sessions close withdraws first and cancels later.
//
// Run may be called once per Speaker. GoBGP's event loop cannot be
// stopped: one idle goroutine stays behind after Run returns.
func (s *Speaker) Run(ctx context.Context) error {
	passwords := make([]string, len(s.cfg.Peers))
	for i, p := range s.cfg.Peers {
		if p.PasswordFile == "" {
			continue
		}
		pw, err := readPassword(p.PasswordFile)
		if err != nil {
			return fmt.Errorf("read the MD5 password of peer %s: %w", p.Address, err)
		}
		if err := checkMD5(p.Address, pw, false); err != nil {
			return fmt.Errorf("peer %s has a password_file: %w", p.Address, err)
		}
		if s.cfg.ListenPort != 0 {
			if err := checkMD5(p.Address, pw, true); err != nil {
				return fmt.Errorf("peer %s has a password_file and halb listens: %w", p.Address, err)
			}
		}
		passwords[i] = pw
	}

	srv := server.NewBgpServer(server.LoggerOption(gobgpLogger{s.log}))
	go srv.Serve()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()

	listen := int32(-1) // GoBGP's "do not listen"
	if s.cfg.ListenPort != 0 {
		listen = int32(s.cfg.ListenPort)
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.cfg.LocalASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: listen,
	}}); err != nil {
		return fmt.Errorf("start bgp server: %w", err)
	}
	if err := srv.WatchEvent(watchCtx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.peerEvent); err != nil {
		s.stop(srv)
		return fmt.Errorf("watch bgp sessions: %w", err)
	}
	for i, p := range s.cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, passwords[i])}); err != nil {
			s.stop(srv)
			return fmt.Errorf("add bgp peer %s: %w", p.Address, err)
		}
	}

	s.mu.Lock()
	s.srv = srv
	var errs []error
	for _, r := range s.want {
		if err := s.addPath(r); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		s.stop(srv)
		return err
	}
	close(s.started)
	s.log.Info("bgp speaker started", "asn", s.cfg.LocalASN, "router_id", s.cfg.RouterID, "peers", len(s.cfg.Peers))

	<-ctx.Done()
	s.stop(srv)
	s.log.Info("bgp speaker stopped")
	return nil
}

// stop withdraws every path, then closes the sessions. The withdrawals go
// out first so that a router drops the routes even if it were to miss the
// Cease (and would otherwise wait for its hold time).
func (s *Speaker) stop(srv *server.BgpServer) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	s.mu.Lock()
	for p, id := range s.paths {
		if err := srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			s.log.Warn("withdraw on stop", "prefix", p, "err", err)
		}
		delete(s.paths, p)
	}
	s.srv = nil
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			s.log.Warn("stop bgp server", "err", err)
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("bgp sessions did not close in time", "timeout", stopTimeout)
	}
}

func readPassword(path string) (string, error) {
	if err := smallfile.CheckPrivate(path); err != nil {
		return "", err
	}
	b, err := smallfile.Read(path, 4096)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	switch {
	case pw == "":
		return "", fmt.Errorf("%s: the first line is empty", path)
	case len(pw) > maxPasswordSize:
		return "", fmt.Errorf("%s: the password has %d bytes; TCP MD5 allows at most %d", path, len(pw), maxPasswordSize)
	}
	return pw, nil
}

func apiPeer(p Peer, password string) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           uint64(connectRetry / time.Second),
			HoldTime:               uint64(p.HoldTime / time.Second),
			KeepaliveInterval:      uint64(p.Keepalive / time.Second),
			IdleHoldTimeAfterReset: uint64(connectRetry / time.Second),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
		},
	}
	if p.Local.IsValid() {
		ap.Transport.LocalAddress = p.Local.String()
	}
	return ap
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// peerEvent records a session's state change. GoBGP calls it from its own
// goroutine, one event at a time.
func (s *Speaker) peerEvent(r *api.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.Type != api.WatchEventResponse_PeerEvent_STATE || ev.Peer == nil || ev.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(ev.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	state := strings.ToLower(ev.Peer.State.SessionState.String())
	s.stateMu.Lock()
	old, known := s.states[addr.Unmap()]
	if !known || old.State == state {
		s.stateMu.Unlock()
		return
	}
	s.states[addr.Unmap()] = PeerState{Address: old.Address, ASN: old.ASN, State: state, Since: time.Now()}
	s.stateMu.Unlock()
	level := slog.LevelDebug
	if state == "established" || old.State == "established" {
		level = slog.LevelInfo // routes start or stop flowing
	}
	s.log.Log(context.Background(), level, "bgp session", "peer", addr, "state", state, "was", old.State)
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// PeerStates returns every configured session's state, in config order.
// It does not call into GoBGP, so a status page may call it often.
func (s *Speaker) PeerStates() []PeerState {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	out := make([]PeerState, 0, len(s.cfg.Peers))
	for _, p := range s.cfg.Peers {
		out = append(out, s.states[p.Address])
	}
	return out
}

// Announce adds the route for r.Prefix, or replaces its attributes. Before
// Run starts it only records the route; Run sends it.
func (s *Speaker) Announce(r Route) error {
	if !r.Prefix.IsValid() || !r.Prefix.IsSingleIP() {
		return fmt.Errorf("announce %v: want a host prefix (/32 or /128)", r.Prefix)
	}
	r.Prefix = netip.PrefixFrom(r.Prefix.Addr().Unmap(), r.Prefix.Addr().Unmap().BitLen())
	r.Communities = slices.Clone(r.Communities)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want[r.Prefix] = r
	if s.srv == nil {
		return nil
	}
	return s.addPath(r)
}

// Withdraw removes the route for p.
func (s *Speaker) Withdraw(p netip.Prefix) error {
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.want, p)
	id, ok := s.paths[p]
	if s.srv == nil || !ok {
		return nil
	}
	if err := s.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	delete(s.paths, p)
	s.log.Info("withdrew", "prefix", p)
	return nil
}

// Announced lists the prefixes asked for, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.want))
	for p := range s.want {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// addPath sends r, replacing an earlier path for the prefix. s.mu is held.
func (s *Speaker) addPath(r Route) error {
	path, err := s.apiPath(r)
	if err != nil {
		return fmt.Errorf("announce %s: %w", r.Prefix, err)
	}
	resp, err := s.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
	if err != nil {
		return fmt.Errorf("announce %s: %w", r.Prefix, err)
	}
	// A new path from the same source replaces the old one in the RIB,
	// so only the newest id is kept for Withdraw.
	s.paths[r.Prefix] = resp.Uuid
	s.log.Info("announced", "prefix", r.Prefix)
	return nil
}
