package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"halb/internal/admin"
	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/events"
	"halb/internal/handoff"
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
	// TickleOpen opens the raw socket tickle ACKs are sent on; nil means
	// tickle.OpenRaw. Tests pass fakes.
	TickleOpen TickleOpener
	// Nft applies the flow hand-off's nftables rules; nil means the nft
	// command, unless Link is a fake: then hand-off is off, so tests never
	// change the host's firewall.
	Nft handoff.Runner
}

// Daemon is one running halb node: it wires the parts together and runs
// them under one context. Each concern lives in its own type: serving
// (config, pools, frontends, checks), controller (the election loop),
// reloader, drills, keyManager, and operatorAPI in front of them all.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	srv     *serving
	ctl     *controller
	reload  *reloader
	drills  *drills
	api     *operatorAPI
	running chan struct{} // closed once Run has started everything
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
	d := &Daemon{opts: opts, log: opts.Log, running: make(chan struct{})}
	d.srv = &serving{
		log: opts.Log, clock: opts.Clock, cfg: cfg,
		pools:    map[string]*pool.Pool{},
		limiter:  proxy.NewLimiter(cfg.MaxConn),
		checkers: map[*pool.Server]context.CancelFunc{},
	}
	d.ctl = newController(opts.NodeName, opts.Version, d.srv, opts.Log)
	d.srv.poke = d.ctl.poke
	if cfg.Cluster != nil {
		if err := d.joinCluster(cfg); err != nil {
			return nil, err
		}
	}
	d.srv.bus, d.srv.node = events.New(events.DefaultRing), d.ctl.name
	d.ctl.feed = &eventFeed{bus: d.srv.bus, node: d.ctl.name}
	d.reload = &reloader{opts: opts, log: opts.Log, srv: d.srv, ctl: d.ctl, running: d.running}
	d.drills = &drills{log: opts.Log, ctl: d.ctl}
	d.api = &operatorAPI{name: d.ctl.name, version: opts.Version, srv: d.srv, ctl: d.ctl,
		reloader: d.reload, drills: d.drills, rates: map[string]rateSample{},
		keys:  &keyManager{log: opts.Log, srv: d.srv, cluster: d.ctl.cluster},
		state: &adminStore{path: cfg.Admin.StateFile, log: opts.Log.With("component", "adminstate")}}
	d.ctl.messages = d.api.dispatch
	if cl := d.ctl.cluster; cl != nil {
		d.api.state.peers, d.api.state.send = clusterPeers(cl), cl.Send
	}
	d.srv.metrics = metrics.New(d.api)
	for _, b := range cfg.Backends {
		d.srv.pools[b.Name] = pool.New(b, opts.Log.With("component", "pool"))
		d.srv.observe(d.srv.pools[b.Name])
	}
	for _, f := range cfg.Frontends {
		d.srv.frontends = append(d.srv.frontends, d.srv.newFrontend(cfg, f, d.srv.pools))
	}
	return d, nil
}

// joinCluster builds the gossip member, the witness and the VIP
// announcers of a config with a cluster section.
func (d *Daemon) joinCluster(cfg *config.Config) error {
	opts := d.opts
	self, ok := cfg.Cluster.Node(opts.NodeName)
	if !ok {
		names := make([]string, len(cfg.Cluster.Nodes))
		for i, n := range cfg.Cluster.Nodes {
			names[i] = n.Name
		}
		return fmt.Errorf("node %q is not in cluster.nodes (%s): pass --node NAME", opts.NodeName, strings.Join(names, ", "))
	}
	d.srv.self, d.ctl.name = self, self.Name
	var keys [][]byte
	if !cfg.Cluster.InsecureGossip {
		var from string
		var err error
		if keys, from, err = loadKeys(cfg.Cluster); err != nil {
			return err
		}
		opts.Log.Info("gossip keys loaded", "file", from, "keys", len(keys))
	}
	cl, err := cluster.New(cluster.Config{
		NodeName:      self.Name,
		BindAddr:      self.Address,
		Port:          cfg.Cluster.Port,
		Peers:         peersOf(cfg.Cluster, self.Name),
		Key:           first(keys),
		SecondaryKeys: rest(keys),
		Insecure:      cfg.Cluster.InsecureGossip,
		Profile:       cfg.Cluster.Profile,
		JoinTimeout:   cfg.Cluster.JoinTimeout,
	}, opts.Log.With("component", "cluster"))
	if err != nil {
		return err
	}
	d.ctl.cluster = cl
	if cfg.Cluster.Witness.IsValid() {
		p := opts.Witness
		if p == nil {
			p = witness.NewICMP()
		}
		d.ctl.witness = witness.New(cfg.Cluster.Witness, p, witness.Options{}, opts.Log)
	}
	link, garp := opts.Link, opts.GARP
	if link == nil {
		link = vip.NewNetlink()
	}
	if garp == nil {
		garp = vip.NewGARP()
		d.ctl.watchARP = true // the real link, so the real ARP traffic to watch
	}
	if d.ctl.bgp, err = newBGPVIPs(cfg, self, link, opts.Log); err != nil {
		return err
	}
	ifnames := make([]string, len(cfg.VIPs))
	for i, v := range cfg.VIPs {
		if v.Announce == config.AnnounceBGP {
			continue // no election: d.ctl.bgp announces it from every eligible node
		}
		ifname := v.Interface
		if self.Interface != "" {
			ifname = self.Interface
		}
		ifnames[i] = ifname
		d.ctl.announcers = append(d.ctl.announcers, &announcer{cfg: v, a: vip.NewAnnouncer(v, ifname, link, garp, opts.Log)})
	}
	open := opts.TickleOpen
	if open == nil {
		open = openRaw
	}
	d.ctl.tickles = newTickles(self.Name, cl, cfg.VIPs, ifnames, d.srv, open, opts.Log)
	if opts.Nft != nil || opts.Link == nil {
		d.ctl.handoffs = newHandoffs(cl, cfg.VIPs, ifnames, d.ctl.announcers, d.ctl.tickles, d.srv, opts.Log)
		if opts.Nft != nil {
			d.ctl.handoffs.nft = opts.Nft
		}
	}
	return nil
}

// Run serves until ctx is cancelled, then stops in the order that loses
// nothing: hand the VIPs over, leave the cluster, stop accepting, drain.
// Every listener is bound, and the stats page built, before anything
// starts: a failure there returns at once with nothing left running.
func (d *Daemon) Run(ctx context.Context) error {
	d.ctl.update(func(f *facts) { f.started = time.Now() })
	cfg, _ := d.srv.current()
	_, fronts := d.srv.parts()
	lns, st, err := d.bind(ctx, cfg, fronts)
	if err != nil {
		return err
	}
	base := context.WithoutCancel(ctx)
	// Admin states first: no client reaches a drained server at start.
	d.api.restore()
	stopHooks := d.runHooks(base)
	defer stopHooks()

	proxyCtx, stopProxy := context.WithCancel(base)
	defer stopProxy()
	pg, pctx := errgroup.WithContext(proxyCtx)
	if err := d.startChecks(pctx); err != nil {
		stopProxy()
		d.srv.tasks.Wait()
		closeAll(lns)
		return err
	}
	for i, f := range fronts {
		d.srv.serveFrontend(pctx, f, lns[i])
	}
	if st != nil {
		// Served by the proxy group: the dashboard stays up while draining.
		pg.Go(func() error { return st.Run(pctx) })
	}

	clusterCtx, stopCluster := context.WithCancel(base)
	defer stopCluster()
	cg, cctx := errgroup.WithContext(clusterCtx)
	srv := admin.NewServer(cfg.Admin.Socket, cfg.Admin.Group, d.api, d.api, d.log)
	cg.Go(func() error { return srv.Run(cctx) })
	d.runCluster(cctx, cg)
	d.log.Info("halb started", "node", d.ctl.name, "version", d.opts.Version,
		"frontends", len(fronts), "vips", len(d.ctl.announcers), "fingerprint", cfg.Fingerprint)
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
	if ctx.Err() != nil && d.ctl.cluster != nil {
		d.ctl.handover(cctx)
		// Connections handed off to the new holder close cleanly while
		// their clients can still be reached (docs/handoff.md).
		d.ctl.handoffs.finish(cctx, time.Now().Add(cfg.Timeouts.Drain))
		d.ctl.withdrawBGP(cctx)
	}
	// No reload from here on: it would start what is being stopped.
	d.reload.stop()
	stopCluster()
	errC := cg.Wait()
	stopProxy()
	errP := pg.Wait()
	d.srv.tasks.Wait()
	if d.ctl.bgp != nil {
		// Only now: open sessions to a BGP VIP needed its address to drain.
		d.ctl.bgp.removeAll()
	}
	if err := errors.Join(errC, errP); err != nil {
		return err
	}
	d.log.Info("halb stopped")
	return nil
}

// bind opens every frontend's listener and builds the stats page; on a
// failure it closes what it opened.
func (d *Daemon) bind(ctx context.Context, cfg *config.Config, fronts []*frontend) ([]net.Listener, *stats.Server, error) {
	lns := make([]net.Listener, 0, len(fronts))
	for _, f := range fronts {
		ln, err := proxy.Listen(ctx, f.cfg.Bind)
		if err != nil {
			closeAll(lns)
			return nil, nil, fmt.Errorf("frontend %s: %w", f.cfg.Name, err)
		}
		lns = append(lns, ln)
	}
	if cfg.Stats == nil {
		return lns, nil, nil
	}
	st, err := stats.New(*cfg.Stats, d.api, d.srv.metrics.Handler(), d.log)
	if err != nil {
		closeAll(lns)
		return nil, nil, fmt.Errorf("stats page: %w", err)
	}
	return lns, st, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

// startChecks starts every server's health check under ctx, the proxy
// group's.
func (d *Daemon) startChecks(ctx context.Context) error {
	d.srv.mu.Lock()
	d.srv.ctx = ctx
	d.srv.mu.Unlock()
	pools, _ := d.srv.parts()
	for _, p := range pools {
		for _, s := range p.Servers() {
			if err := d.srv.startCheck(p, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// runCluster starts gossip, the witness, the announcers and the election
// loop in g, when the config has a cluster section.
func (d *Daemon) runCluster(ctx context.Context, g *errgroup.Group) {
	c := d.ctl
	if c.cluster == nil {
		return
	}
	g.Go(func() error { return c.cluster.Run(ctx) })
	g.Go(func() error { return c.tickles.run(ctx) })
	c.handoffs.start(ctx)
	g.Go(func() error { return c.handoffs.run(ctx) })
	if c.witness != nil {
		g.Go(func() error { return c.witness.Run(ctx) })
	}
	if c.bgp != nil && c.bgp.speaker != nil {
		// Cancelled after withdrawBGP: its stop withdraws what is left and
		// closes the sessions with a Cease.
		g.Go(func() error { return c.bgp.speaker.Run(ctx) })
	}
	for _, a := range c.announcers {
		g.Go(func() error { return a.a.Run(ctx) })
		if c.watchARP {
			g.Go(func() error {
				// Best effort: without it a peer's stray claim is
				// corrected by the periodic refresh instead.
				st := a.a.Status()
				if err := vip.WatchARP(ctx, st.Interface, st.VIP.Addr(), a.a.Foreign); err != nil {
					d.log.Warn("not watching for other hosts announcing the VIP", "err", err)
				}
				return nil
			})
		}
	}
	// The loop counts as having made progress when it starts.
	c.lastRun.Store(time.Now().UnixNano())
	g.Go(func() error { return c.run(ctx) })
}

// Running is closed once Run has started every part; Reload refuses to
// run before, so a caller that gets a reload request early can wait for it.
func (d *Daemon) Running() <-chan struct{} { return d.running }

// Reload re-reads the config file and applies it, all or nothing; see
// reloader.Reload.
func (d *Daemon) Reload() error { return d.reload.Reload() }

// notifyReady tells systemd halb is serving once every listener is up.
func (d *Daemon) notifyReady(ctx context.Context) {
	_, fronts := d.srv.parts()
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

// stalledAfter is how long the election loop may go without finishing a
// round before the watchdog stops being fed: many rounds (one every
// reconcileEvery at least), but well within any sensible WatchdogSec.
const stalledAfter = 10 * reconcileEvery

// alive feeds the systemd watchdog: the election loop finished a round
// recently, so it is not stuck; taking the locks proves the control state
// is not deadlocked. A node without a cluster has no loop.
func (d *Daemon) alive() bool {
	d.srv.current()
	d.ctl.snapshot()
	if d.ctl.cluster == nil {
		return true
	}
	return d.ctl.progressed(time.Now(), stalledAfter)
}
