package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/pool"
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
// maxconn, priorities, policy, quorum and the gossip peers. An invalid file,
// or one that changes what only a restart can change, is refused with every
// reason, and nothing that runs changes. Established connections to servers
// that remain are untouched; those of a removed server may finish for
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
	d.mu.Lock()
	running := d.checkCtx != nil
	d.mu.Unlock()
	if !running {
		return errors.New("reload refused: halb is still starting")
	}
	if err := restartOnly(old, next, d.name); err != nil {
		d.log.Error("reload refused; still running the previous config", "err", err)
		return err
	}
	// Check every health setting before changing anything.
	for _, b := range next.Backends {
		if _, err := health.NewChecker(b.Health); err != nil {
			return fmt.Errorf("reload refused: backend %s: %w", b.Name, err)
		}
	}

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
			changes = append(changes, "backend "+name+" removed")
		}
	}
	for _, p := range startChecks {
		for _, s := range p.Servers() {
			if err := d.startCheck(p, s); err != nil {
				d.log.Error("start health check", "backend", p.Name(), "server", s.Name(), "err", err)
			}
		}
	}

	// Frontends: keep the unchanged ones (their sessions are untouched),
	// replace changed ones, start new ones, drain removed ones.
	keep := make(map[string]*frontend, len(oldFronts))
	for _, f := range oldFronts {
		keep[f.cfg.Name] = f
	}
	var fronts, started []*frontend
	for _, fc := range next.Frontends {
		if f, ok := keep[fc.Name]; ok && f.cfg == fc {
			delete(keep, fc.Name)
			fronts = append(fronts, f)
			continue
		}
		if f, ok := keep[fc.Name]; ok {
			// Changed: stop accepting first, so a new listener can take
			// the same address; its sessions drain.
			delete(keep, fc.Name)
			f.stop()
			select {
			case <-f.f.Closed():
			case <-time.After(5 * time.Second):
			}
			changes = append(changes, "frontend "+fc.Name+" replaced")
		} else {
			changes = append(changes, "frontend "+fc.Name+" added")
		}
		nf := d.newFrontend(next, fc, pools)
		fronts = append(fronts, nf)
		started = append(started, nf)
	}
	for name, f := range keep {
		f.stop()
		changes = append(changes, "frontend "+name+" removed (draining)")
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

	// New listeners: report the ones that cannot listen.
	var errs []error
	for _, f := range started {
		fctx, stop := context.WithCancel(ctx)
		d.mu.Lock()
		f.stop = stop
		d.mu.Unlock()
		runErr := make(chan error, 1)
		d.checks.Add(1)
		go func() {
			defer d.checks.Done()
			err := f.f.Run(fctx)
			if err != nil {
				d.log.Error("frontend stopped", "frontend", f.cfg.Name, "err", err)
			}
			runErr <- err
		}()
		select {
		case <-f.f.Ready():
		case err := <-runErr:
			if err != nil {
				errs = append(errs, fmt.Errorf("frontend %s: %w", f.cfg.Name, err))
			}
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("frontend %s: not listening after 5s", f.cfg.Name))
		}
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
	d.poke()
	d.log.Info("config reloaded", "fingerprint", next.Fingerprint, "changes", strings.Join(changes, "; "))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config applied, but: %w", err)
	}
	return nil
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
