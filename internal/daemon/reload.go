package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
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

// Reload re-reads the config file and applies what changed: servers (added,
// removed, weights, backup flags), health-check settings, timeouts for new
// sessions, priorities, policy, quorum and the gossip peers. An invalid file,
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
	d.mu.Lock()
	d.cfg, d.self = next, self
	d.mu.Unlock()

	var changes []string
	for _, b := range next.Backends {
		p := d.pools[b.Name]
		before := p.Config()
		if reflect.DeepEqual(before, b) {
			continue
		}
		added, removed := p.Update(b)
		healthChanged := !reflect.DeepEqual(before.Health, b.Health)
		for _, s := range p.Servers() {
			isNew := false
			for _, a := range added {
				isNew = isNew || a == s
			}
			if isNew || healthChanged {
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
	if old.Timeouts != next.Timeouts {
		for _, f := range d.frontends {
			f.SetTimeouts(next.Timeouts)
		}
		changes = append(changes, "timeouts")
	}
	if next.Cluster != nil {
		if !reflect.DeepEqual(old.Cluster, next.Cluster) {
			changes = append(changes, "cluster")
		}
		d.cluster.SetPeers(peersOf(next.Cluster, d.name))
	}
	d.poke()
	d.log.Info("config reloaded", "fingerprint", next.Fingerprint, "changes", strings.Join(changes, "; "))
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
	if !reflect.DeepEqual(old.Frontends, next.Frontends) {
		need("frontends (add, remove, rebind)")
	}
	if len(old.Backends) != len(next.Backends) {
		need("the set of backends")
	} else {
		for i := range old.Backends {
			if old.Backends[i].Name != next.Backends[i].Name {
				need("the set of backends")
				break
			}
		}
	}
	if old.MaxConn != next.MaxConn {
		need("maxconn")
	}
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
		if o.Port != n.Port || o.KeyFile != n.KeyFile || o.InsecureGossip != n.InsecureGossip || o.Profile != n.Profile || o.Witness != n.Witness {
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
