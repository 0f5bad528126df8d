package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"halb/internal/admin"
	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/metrics"
	"halb/internal/pool"
	"halb/internal/proxy"
	"halb/internal/sdnotify"
	"halb/internal/stats"
	"halb/internal/vip"
	"halb/internal/witness"
)

// Options are what the daemon needs beyond the config file.
type Options struct {
	ConfigPath string
	NodeName   string
	Version    string
	Log        *slog.Logger
	// Link and GARP reach the OS; nil means the real netlink and ARP
	// implementations. Tests pass fakes.
	Link vip.Link
	GARP vip.GARPSender
	// Witness probes cluster.witness; nil means ICMP echo.
	Witness witness.Prober
	// Override applies command-line overrides to a config, also to the
	// ones a reload reads, so that reloading does not undo them.
	Override func(*config.Config)
	// Notify tells systemd about readiness and feeds its watchdog; nil
	// (or a Notifier without NOTIFY_SOCKET) does nothing.
	Notify *sdnotify.Notifier
	// Clock drives health-check scheduling; nil means the real clock.
	Clock health.Clock
}

// Daemon is one running halb node.
type Daemon struct {
	cfg     *config.Config
	opts    Options
	log     *slog.Logger
	started time.Time

	// pools and frontends are replaced whole by a reload (copy on write),
	// guarded by mu; read them with parts.
	pools     map[string]*pool.Pool
	frontends []*frontend
	limiter   *proxy.Limiter

	name       string      // this node's name; fixed for the process
	self       config.Node // zero without a cluster; guarded by mu (reload)
	cluster    *cluster.Cluster
	announcers []*announcer
	watchARP   bool             // watch the link for other hosts announcing a VIP (real links only)
	witness    *witness.Witness // nil without cluster.witness
	metrics    *metrics.Metrics

	wake chan struct{} // coalesced requests for an election round

	mu          sync.Mutex
	leaving     bool                 // shutting down: ineligible so peers take the VIPs
	holderView  map[string]string    // VIP -> owner from the last election round
	preemptView map[string]time.Time // VIP -> when this node will preempt its owner; zero if not
	lastSeen    map[string]time.Time // member -> last time it was alive here
	drill       drillState
	rates       map[string]rateSample // frontend -> last look, for the rate

	// Health checks run one goroutine per server under checkCtx; a reload
	// stops and starts them one by one.
	checkCtx   context.Context
	checkers   map[*pool.Server]context.CancelFunc
	checks     sync.WaitGroup
	reloadMu   sync.Mutex // one reload at a time
	keysMu     sync.Mutex // one gossip key change at a time
	replay     replayGuard
	maintained bool // operator maintenance: ineligible
	stopping   bool // Run is stopping: reloads are refused; guarded by mu

	running chan struct{} // closed once Run has started everything
	watch   poolWatch     // forwards each pool's changes to the election loop
}

// announcer pairs a VIP's config with the component holding it.
type announcer struct {
	cfg config.VIP
	a   *vip.Announcer
}

// New builds a daemon from a validated config. It does no I/O beyond
// reading the gossip key.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = health.RealClock()
	}
	d := &Daemon{
		cfg:      cfg,
		opts:     opts,
		log:      opts.Log,
		pools:    map[string]*pool.Pool{},
		limiter:  proxy.NewLimiter(cfg.MaxConn),
		wake:     make(chan struct{}, 1),
		lastSeen: map[string]time.Time{},
		rates:    map[string]rateSample{},
		checkers: map[*pool.Server]context.CancelFunc{},
		running:  make(chan struct{}),
	}
	for _, b := range cfg.Backends {
		d.pools[b.Name] = pool.New(b, opts.Log.With("component", "pool"))
	}
	d.metrics = metrics.New(d)
	for _, f := range cfg.Frontends {
		d.frontends = append(d.frontends, d.newFrontend(cfg, f, d.pools))
	}
	if cfg.Cluster == nil {
		return d, nil
	}
	self, ok := cfg.Cluster.Node(opts.NodeName)
	if !ok {
		names := make([]string, len(cfg.Cluster.Nodes))
		for i, n := range cfg.Cluster.Nodes {
			names[i] = n.Name
		}
		return nil, fmt.Errorf("node %q is not in cluster.nodes (%s): pass --node NAME", opts.NodeName, strings.Join(names, ", "))
	}
	d.self, d.name = self, self.Name
	var keys [][]byte
	if !cfg.Cluster.InsecureGossip {
		var from string
		var err error
		if keys, from, err = loadKeys(cfg.Cluster); err != nil {
			return nil, err
		}
		opts.Log.Info("gossip keys loaded", "file", from, "keys", len(keys))
	}
	var peers []netip.AddrPort
	for _, n := range cfg.Cluster.Nodes {
		if n.Name != self.Name {
			peers = append(peers, netip.AddrPortFrom(n.Address, uint16(cfg.Cluster.Port)))
		}
	}
	cl, err := cluster.New(cluster.Config{
		NodeName:      self.Name,
		BindAddr:      self.Address,
		Port:          cfg.Cluster.Port,
		Peers:         peers,
		Key:           first(keys),
		SecondaryKeys: rest(keys),
		Insecure:      cfg.Cluster.InsecureGossip,
		Profile:       cfg.Cluster.Profile,
		JoinTimeout:   cfg.Cluster.JoinTimeout,
	}, opts.Log.With("component", "cluster"))
	if err != nil {
		return nil, err
	}
	d.cluster = cl
	if cfg.Cluster.Witness.IsValid() {
		p := opts.Witness
		if p == nil {
			p = witness.NewICMP()
		}
		d.witness = witness.New(cfg.Cluster.Witness, p, witness.Options{}, opts.Log)
	}
	link, garp := opts.Link, opts.GARP
	if link == nil {
		link = vip.NewNetlink()
	}
	if garp == nil {
		garp = vip.NewGARP()
		d.watchARP = true // the real link, so the real ARP traffic to watch
	}
	for _, v := range cfg.VIPs {
		ifname := v.Interface
		if self.Interface != "" {
			ifname = self.Interface
		}
		d.announcers = append(d.announcers, &announcer{cfg: v, a: vip.NewAnnouncer(v, ifname, link, garp, opts.Log)})
	}
	return d, nil
}

// Run serves until ctx is cancelled, then stops in the order that loses
// nothing: hand the VIPs over, leave the cluster, stop accepting, drain.
// Every listener is bound, and the stats page built, before anything
// starts: a failure there returns at once with nothing left running.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	d.started = time.Now()
	cfg := d.cfg
	d.mu.Unlock()
	base := context.WithoutCancel(ctx)

	lns := make([]net.Listener, 0, len(d.frontends))
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, f := range d.frontends {
		ln, err := proxy.Listen(ctx, f.cfg.Bind)
		if err != nil {
			closeAll()
			return fmt.Errorf("frontend %s: %w", f.cfg.Name, err)
		}
		lns = append(lns, ln)
	}
	var st *stats.Server
	if cfg.Stats != nil {
		var err error
		if st, err = stats.New(*cfg.Stats, d, d.metrics.Handler(), d.log); err != nil {
			closeAll()
			return fmt.Errorf("stats page: %w", err)
		}
	}

	proxyCtx, stopProxy := context.WithCancel(base)
	defer stopProxy()
	pg, pctx := errgroup.WithContext(proxyCtx)
	d.mu.Lock()
	d.checkCtx = pctx
	d.mu.Unlock()
	for _, p := range d.pools {
		for _, s := range p.Servers() {
			if err := d.startCheck(p, s); err != nil {
				stopProxy()
				d.checks.Wait()
				closeAll()
				return err
			}
		}
	}
	for i, f := range d.frontends {
		d.serveFrontend(pctx, f, lns[i])
	}
	if st != nil {
		// Served by the proxy group: the dashboard stays up while draining.
		pg.Go(func() error { return st.Run(pctx) })
	}

	clusterCtx, stopCluster := context.WithCancel(base)
	defer stopCluster()
	cg, cctx := errgroup.WithContext(clusterCtx)
	srv := admin.NewServer(cfg.Admin.Socket, cfg.Admin.Group, d, d, d.log)
	cg.Go(func() error { return srv.Run(cctx) })
	if d.cluster != nil {
		cg.Go(func() error { return d.cluster.Run(cctx) })
		if d.witness != nil {
			cg.Go(func() error { return d.witness.Run(cctx) })
		}
		for _, a := range d.announcers {
			cg.Go(func() error { return a.a.Run(cctx) })
			if d.watchARP {
				cg.Go(func() error {
					// Best effort: without it a peer's stray claim is
					// corrected by the periodic refresh instead.
					st := a.a.Status()
					if err := vip.WatchARP(cctx, st.Interface, st.VIP.Addr(), a.a.Foreign); err != nil {
						d.log.Warn("not watching for other hosts announcing the VIP", "err", err)
					}
					return nil
				})
			}
		}
		cg.Go(func() error { return d.control(cctx) })
	}
	d.log.Info("halb started", "node", d.name, "version", d.opts.Version,
		"frontends", len(d.frontends), "vips", len(d.announcers), "fingerprint", cfg.Fingerprint)
	cg.Go(func() error { return d.opts.Notify.RunWatchdog(cctx, d.alive) })
	pg.Go(func() error { d.notifyReady(pctx); return nil })
	close(d.running)

	select {
	case <-ctx.Done():
		d.log.Info("stopping: handing over VIPs, then draining connections")
	case <-pctx.Done():
	case <-cctx.Done():
	}
	if err := d.opts.Notify.Stopping(); err != nil {
		d.log.Warn("notify systemd", "err", err)
	}
	if ctx.Err() != nil && d.cluster != nil {
		d.handover(cctx)
	}
	// No reload from here on: it would start what is being stopped.
	d.reloadMu.Lock()
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.reloadMu.Unlock()
	stopCluster()
	errC := cg.Wait()
	stopProxy()
	errP := pg.Wait()
	d.checks.Wait()
	if err := errors.Join(errC, errP); err != nil {
		return err
	}
	d.log.Info("halb stopped")
	return nil
}

// Running is closed once Run has started every part; Reload refuses to
// run before, so a caller that gets a reload request early can wait for it.
func (d *Daemon) Running() <-chan struct{} { return d.running }

// handover makes this node ineligible and waits, bounded, until the VIPs it
// holds have been taken by a peer, so that removing them loses no connection.
func (d *Daemon) handover(ctx context.Context) {
	d.mu.Lock()
	d.leaving = true
	d.mu.Unlock()
	d.poke()
	alive := 0
	for _, m := range d.cluster.Members() {
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
	for {
		held := 0
		for _, a := range d.announcers {
			if a.a.Held() {
				held++
			}
		}
		if held == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			d.log.Warn("no peer took the VIPs in time; releasing them anyway", "timeout", handoverTimeout)
			return
		case <-tick.C:
		}
	}
}

// frontend is a running listener and the config it was built from.
type frontend struct {
	cfg  config.Frontend
	f    *proxy.Frontend
	stop context.CancelFunc // set once it runs; stops accepting and drains
}

func (d *Daemon) newFrontend(cfg *config.Config, fc config.Frontend, pools map[string]*pool.Pool) *frontend {
	return &frontend{cfg: fc, f: proxy.NewFrontend(fc, pools[fc.Backend], proxy.Options{
		Timeouts: cfg.Timeouts,
		ConnLog:  cfg.Log.Connections,
		Limit:    d.limiter,
	}, d.log.With("component", "proxy", "frontend", fc.Name))}
}

// parts returns the pools and frontends in force; a reload replaces both
// collections, never changes them in place.
func (d *Daemon) parts() (map[string]*pool.Pool, []*frontend) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pools, d.frontends
}

// current returns the config in force and this node's entry in it; a
// reload replaces both.
func (d *Daemon) current() (*config.Config, config.Node) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg, d.self
}

// notifyReady tells systemd halb is serving once every listener is up.
func (d *Daemon) notifyReady(ctx context.Context) {
	_, fronts := d.parts()
	for _, f := range fronts {
		select {
		case <-f.f.Ready():
		case <-ctx.Done():
			return
		}
	}
	if err := d.opts.Notify.Ready(); err != nil {
		d.log.Warn("notify systemd", "err", err)
	}
	_ = d.opts.Notify.Status(fmt.Sprintf("serving %d frontend(s)", len(fronts)))
}

// alive feeds the systemd watchdog: taking the daemon's lock proves the
// control state is not deadlocked.
func (d *Daemon) alive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return true
}

// observed feeds each health-check result to the metrics on its way to
// the server's state machine.
type observed struct {
	health.Target
	m               *metrics.Metrics
	backend, server string
}

func (o observed) ReportCheck(r health.Result) {
	o.m.ObserveCheck(o.backend, o.server, r.Latency, r.OK)
	o.Target.ReportCheck(r)
}

// handoverTimeout bounds a graceful stop's wait for a peer to take over.
const handoverTimeout = 3 * time.Second
