package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/pool"
	"halb/internal/proxy"
)

// startCheck runs the health check of server s of pool p until the daemon
// stops or a reload replaces it.
func (d *Daemon) startCheck(p *pool.Pool, s *pool.Server) error {
	hc := p.Config().Health
	checker, err := health.NewChecker(hc)
	if err != nil {
		return fmt.Errorf("backend %s: %w", p.Name(), err)
	}
	sc := s.Config()
	target := observed{Target: s, m: d.metrics, backend: p.Name(), server: sc.Name}
	r := health.NewRunner(checker, sc.Address, hc, target, d.opts.Clock,
		d.log.With("component", "health", "backend", p.Name(), "server", sc.Name))
	d.mu.Lock()
	ctx, cancel := context.WithCancel(d.checkCtx)
	if old := d.checkers[s]; old != nil {
		old()
	}
	d.checkers[s] = cancel
	d.mu.Unlock()
	d.checks.Add(1)
	go func() {
		defer d.checks.Done()
		_ = r.Run(ctx) // returns nil when cancelled
	}()
	return nil
}

// stopCheck ends the health check of s.
func (d *Daemon) stopCheck(s *pool.Server) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cancel := d.checkers[s]; cancel != nil {
		cancel()
		delete(d.checkers, s)
	}
}

// Reload re-reads the config file and applies what changed: frontends and
// backends (added, removed, changed), servers (added, removed, weights,
// backup flags), health-check settings, timeouts for new sessions,
// maxconn, priorities, policy, quorum and the gossip peers. It applies all
// of it or nothing: an invalid file, one that changes what only a restart
// can change, or one with an address that cannot be bound is refused with
// every reason, and nothing that runs changes. New addresses are bound
// before any old listener closes. A frontend that keeps its name and
// address keeps its socket and its sessions (backend and maxconn change in
// place); one whose address another frontend had takes that socket over.
// Established connections to servers that remain are untouched; those of a
// removed server, or of a frontend that moved or went, may finish for
// timeouts.drain and are closed then.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	next, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.log.Error("reload refused: config invalid; still running the previous one", "err", err)
		return fmt.Errorf("%s:\n%w", d.opts.ConfigPath, err)
	}
	if d.opts.Override != nil {
		d.opts.Override(next)
	}
	old, _ := d.current()
	select {
	case <-d.running:
	default:
		d.log.Warn("reload refused: halb is still starting")
		return errors.New("reload refused: halb is still starting")
	}
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		d.log.Warn("reload refused: halb is stopping")
		return errors.New("reload refused: halb is stopping")
	}
	// Tell systemd a reload is under way and that halb is ready again
	// after it, applied or refused; only once halb runs, since READY=1
	// while starting would announce readiness too soon.
	_ = d.opts.Notify.Reloading()
	defer func() { _ = d.opts.Notify.Ready() }()
	if err := restartOnly(old, next, d.name); err != nil {
		d.log.Error("reload refused; still running the previous config", "err", err)
		return err
	}
	// Check every health setting before changing anything.
	for _, b := range next.Backends {
		if _, err := health.NewChecker(b.Health); err != nil {
			d.log.Error("reload refused; still running the previous config", "backend", b.Name, "err", err)
			return fmt.Errorf("reload refused: backend %s: %w", b.Name, err)
		}
	}
	_, oldFronts := d.parts()
	plan, err := d.planFrontends(oldFronts, next.Frontends)
	if err != nil {
		d.log.Error("reload refused: a listener cannot be opened; nothing changed, still running the previous config", "err", err)
		return fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	return d.apply(old, next, plan)
}

// apply puts a checked config into force; the listeners it needs are
// bound or handed over, so what is left cannot fail but for a listener
// that died meanwhile.
func (d *Daemon) apply(old, next *config.Config, plan []frontendStep) error {
	var self config.Node
	if next.Cluster != nil {
		self, _ = next.Cluster.Node(d.name)
	}
	oldPools, oldFronts := d.parts()
	var changes []string

	// Backends: update the ones that stay, build new ones, retire the gone.
	pools := make(map[string]*pool.Pool, len(next.Backends))
	var startChecks []*pool.Pool
	for _, b := range next.Backends {
		p, ok := oldPools[b.Name]
		if !ok {
			p = pool.New(b, d.log.With("component", "pool"))
			pools[b.Name] = p
			startChecks = append(startChecks, p)
			changes = append(changes, "backend "+b.Name+" added")
			continue
		}
		pools[b.Name] = p
		before := p.Config()
		if reflect.DeepEqual(before, b) {
			continue
		}
		added, removed := p.Update(b)
		healthChanged := !reflect.DeepEqual(before.Health, b.Health)
		for _, s := range p.Servers() {
			if healthChanged || slices.Contains(added, s) {
				// Validated above; a failure here would be a file changed
				// in between, and the server keeps its previous check.
				if err := d.startCheck(p, s); err != nil {
					d.log.Error("restart health check", "backend", b.Name, "server", s.Name(), "err", err)
				}
			}
		}
		for _, s := range removed {
			d.stopCheck(s)
			d.retire(b.Name, s, next.Timeouts.Drain)
		}
		changes = append(changes, fmt.Sprintf("backend %s: +%d -%d servers", b.Name, len(added), len(removed)))
	}
	for name, p := range oldPools {
		if _, ok := pools[name]; !ok {
			for _, s := range p.Servers() {
				d.stopCheck(s)
				d.retire(name, s, next.Timeouts.Drain)
			}
			d.unwatchPool(p)
			changes = append(changes, "backend "+name+" removed")
		}
	}
	for _, p := range startChecks {
		for _, s := range p.Servers() {
			if err := d.startCheck(p, s); err != nil {
				d.log.Error("start health check", "backend", p.Name(), "server", s.Name(), "err", err)
			}
		}
		d.watchPool(p)
	}

	// Frontends, as planned: in place, taking another's socket, or on a
	// socket bound already.
	var fronts, started []*frontend
	var lns []net.Listener
	var errs []error
	going := make(map[*frontend]bool, len(oldFronts))
	for _, f := range oldFronts {
		going[f] = true
	}
	for _, st := range plan {
		fc := st.cfg
		switch {
		case st.keep != nil:
			delete(going, st.keep)
			st.keep.f.SetBackend(pools[fc.Backend])
			st.keep.f.SetMaxConn(fc.MaxConn)
			if st.keep.cfg != fc {
				changes = append(changes, "frontend "+fc.Name+" changed in place")
			}
			fronts = append(fronts, &frontend{cfg: fc, f: st.keep.f, stop: st.keep.stop})
			continue
		case st.from != nil:
			ln, err := st.from.f.HandOver()
			if err != nil {
				// Its listener died meanwhile: bind anew.
				ln, err = proxy.Listen(d.checkContext(), fc.Bind)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("frontend %s: %w", fc.Name, err))
			}
			st.ln = ln
			changes = append(changes, fmt.Sprintf("frontend %s took over %s from %s", fc.Name, fc.Bind, st.from.cfg.Name))
		default:
			changes = append(changes, fmt.Sprintf("frontend %s listening on %s", fc.Name, fc.Bind))
		}
		nf := d.newFrontend(next, fc, pools)
		fronts = append(fronts, nf)
		started = append(started, nf)
		lns = append(lns, st.ln)
	}
	for f := range going {
		f.stop()
		changes = append(changes, "frontend "+f.cfg.Name+" on "+f.cfg.Bind.String()+" stopped (draining)")
	}
	for _, f := range fronts {
		f.f.SetTimeouts(next.Timeouts)
	}
	d.limiter.SetMax(next.MaxConn)

	d.mu.Lock()
	d.cfg, d.self = next, self
	d.pools, d.frontends = pools, fronts
	ctx := d.checkCtx
	d.mu.Unlock()
	for i, f := range started {
		d.serveFrontend(ctx, f, lns[i])
	}

	if next.Cluster != nil {
		if !reflect.DeepEqual(old.Cluster, next.Cluster) {
			changes = append(changes, "cluster")
		}
		d.cluster.SetPeers(peersOf(next.Cluster, d.name))
	}
	if old.Timeouts != next.Timeouts {
		changes = append(changes, "timeouts")
	}
	changes = append(changes, maxconnChanges(old, next)...)
	d.poke()
	d.log.Info("config reloaded", "fingerprint", next.Fingerprint, "changes", strings.Join(changes, "; "))
	if err := errors.Join(errs...); err != nil {
		d.log.Error("config reloaded, but a frontend has no listener", "err", err)
		return fmt.Errorf("config applied, but: %w", err)
	}
	return nil
}

// frontendStep is how one frontend of a new config gets its listener.
type frontendStep struct {
	cfg  config.Frontend
	keep *frontend    // same name and address: changed in place
	from *frontend    // another's address: its socket is handed over
	ln   net.Listener // otherwise bound anew, before anything changes
}

// planFrontends decides how each frontend of next gets its listener and
// binds the new addresses. If one cannot be bound, it closes what it bound
// and returns every failure: nothing has changed then.
func (d *Daemon) planFrontends(old []*frontend, next []config.Frontend) ([]frontendStep, error) {
	byName := make(map[string]*frontend, len(old))
	byBind := make(map[netip.AddrPort]*frontend, len(old))
	for _, f := range old {
		byName[f.cfg.Name] = f
		if f.f.ListenErr() == nil {
			byBind[f.cfg.Bind] = f
		}
	}
	ctx := d.checkContext()
	steps := make([]frontendStep, 0, len(next))
	var errs []error
	for _, fc := range next {
		st := frontendStep{cfg: fc}
		if f := byName[fc.Name]; f != nil && f.cfg.Bind == fc.Bind && f.f.ListenErr() == nil {
			st.keep = f
		} else if f := byBind[fc.Bind]; f != nil {
			st.from = f
		} else if ln, err := proxy.Listen(ctx, fc.Bind); err != nil {
			errs = append(errs, fmt.Errorf("frontend %s: %w", fc.Name, err))
		} else {
			st.ln = ln
		}
		steps = append(steps, st)
	}
	if err := errors.Join(errs...); err != nil {
		for _, st := range steps {
			if st.ln != nil {
				_ = st.ln.Close()
			}
		}
		return nil, err
	}
	return steps, nil
}

// checkContext is the context the proxy group runs under.
func (d *Daemon) checkContext() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.checkCtx
}

// serveFrontend runs f on ln (nil: f binds its address itself) until ctx
// ends or the frontend is stopped, and waits until it accepts or failed.
// A frontend that fails does not stop the daemon: it shows in status and
// makes the node ineligible.
func (d *Daemon) serveFrontend(ctx context.Context, f *frontend, ln net.Listener) {
	fctx, stop := context.WithCancel(ctx)
	d.mu.Lock()
	f.stop = stop
	d.mu.Unlock()
	d.checks.Add(1)
	go func() {
		defer d.checks.Done()
		var err error
		if ln != nil {
			err = f.f.Serve(fctx, ln)
		} else {
			err = f.f.Run(fctx)
		}
		if err != nil {
			d.log.Error("frontend stopped listening", "frontend", f.cfg.Name, "err", err)
			d.poke()
		}
	}()
	select {
	case <-f.f.Ready():
	case <-f.f.Closed():
	}
}

// retire lets the open connections of a server removed by a reload finish,
// and closes those still open after grace (0: at once).
func (d *Daemon) retire(backend string, s *pool.Server, grace time.Duration) {
	d.mu.Lock()
	ctx := d.checkCtx
	d.mu.Unlock()
	d.log.Info("server removed by reload; its open connections may finish", "backend", backend, "server", s.Name(), "grace", grace)
	d.checks.Add(1)
	go func() {
		defer d.checks.Done()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		if n := s.CloseConnections(); n > 0 {
			d.log.Info("closed connections of a removed server after the grace period", "backend", backend, "server", s.Name(), "closed", n)
		}
	}()
}

// peersOf lists the gossip addresses of every node but self.
func peersOf(c *config.Cluster, self string) []netip.AddrPort {
	var peers []netip.AddrPort
	for _, n := range c.Nodes {
		if n.Name != self {
			peers = append(peers, netip.AddrPortFrom(n.Address, uint16(c.Port)))
		}
	}
	return peers
}

// restartOnly lists the changes a running daemon cannot apply.
func restartOnly(old, next *config.Config, self string) error {
	var errs []error
	need := func(what string) { errs = append(errs, fmt.Errorf("%s changed: that needs a restart", what)) }
	if !reflect.DeepEqual(old.VIPs, next.VIPs) {
		need("vips")
	}
	if old.Admin != next.Admin {
		need("admin")
	}
	if !reflect.DeepEqual(old.Stats, next.Stats) {
		need("stats")
	}
	if old.Log != next.Log {
		need("log")
	}
	switch {
	case (old.Cluster == nil) != (next.Cluster == nil):
		need("the cluster section's presence")
	case old.Cluster != nil:
		o, n := *old.Cluster, *next.Cluster
		if o.Port != n.Port || o.KeyFile != n.KeyFile || o.KeyringFile != n.KeyringFile || o.InsecureGossip != n.InsecureGossip || o.Profile != n.Profile || o.Witness != n.Witness {
			need("cluster port, key, profile or witness")
		}
		on, _ := o.Node(self)
		nn, ok := n.Node(self)
		if !ok {
			errs = append(errs, fmt.Errorf("this node %q is no longer in cluster.nodes", self))
		} else if on.Address != nn.Address || on.Interface != nn.Interface {
			need("this node's address or interface")
		}
	}
	return errors.Join(errs...)
}

// maxconnChanges names the connection limits a reload changes, for its log
// line: the global maxconn and that of each frontend that stays.
func maxconnChanges(old, next *config.Config) []string {
	var out []string
	if old.MaxConn != next.MaxConn {
		out = append(out, fmt.Sprintf("maxconn %d -> %d", old.MaxConn, next.MaxConn))
	}
	for _, nf := range next.Frontends {
		for _, of := range old.Frontends {
			if of.Name == nf.Name && of.MaxConn != nf.MaxConn {
				out = append(out, fmt.Sprintf("frontend %s maxconn %d -> %d", nf.Name, of.MaxConn, nf.MaxConn))
			}
		}
	}
	return out
}
