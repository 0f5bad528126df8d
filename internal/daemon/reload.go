package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/internal/pool"
	"halb/internal/proxy"
)

// reloader re-reads the config file on request and puts it into force,
// all of it or nothing.
type reloader struct {
	opts Options
	log  *slog.Logger
	srv  *serving
	ctl  *controller
	// running is closed once Run has started everything.
	running chan struct{}

	mu       sync.Mutex // one reload at a time
	stopping bool       // Run is stopping: reloads are refused; guarded by mu
}

// stop refuses every reload from now on; one under way finishes first.
func (r *reloader) stop() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
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
func (r *reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := config.Load(r.opts.ConfigPath)
	if err != nil {
		r.log.Error("reload refused: config invalid; still running the previous one", "err", err)
		return fmt.Errorf("%s:\n%w", r.opts.ConfigPath, err)
	}
	if r.opts.Override != nil {
		r.opts.Override(next)
	}
	if err := r.refusedNow(); err != nil {
		r.log.Warn(err.Error())
		return err
	}
	// Tell systemd a reload is under way and that halb is ready again
	// after it, applied or refused; only once halb runs, since READY=1
	// while starting would announce readiness too soon.
	_ = r.opts.Notify.Reloading()
	defer func() { _ = r.opts.Notify.Ready() }()
	old, _ := r.srv.current()
	if err := check(old, next, r.ctl.name); err != nil {
		r.log.Error("reload refused; still running the previous config", "err", err)
		return err
	}
	_, oldFronts := r.srv.parts()
	plan, err := r.planFrontends(oldFronts, next.Frontends)
	if err != nil {
		r.log.Error("reload refused: a listener cannot be opened; nothing changed, still running the previous config", "err", err)
		return fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	return r.apply(old, next, plan)
}

// refusedNow says why no reload can run at the moment, or nil.
func (r *reloader) refusedNow() error {
	select {
	case <-r.running:
	default:
		return errors.New("reload refused: halb is still starting")
	}
	if r.stopping {
		return errors.New("reload refused: halb is stopping")
	}
	return nil
}

// check refuses a config that changes what only a restart can change, or
// with a health check that cannot be built.
func check(old, next *config.Config, self string) error {
	if err := restartOnly(old, next, self); err != nil {
		return err
	}
	for _, b := range next.Backends {
		if _, err := health.NewChecker(b.Health); err != nil {
			return fmt.Errorf("reload refused: backend %s: %w", b.Name, err)
		}
	}
	return nil
}

// apply puts a checked config into force; the listeners it needs are
// bound or handed over, so what is left cannot fail but for a listener
// that died meanwhile.
func (r *reloader) apply(old, next *config.Config, plan []frontendStep) error {
	var self config.Node
	if next.Cluster != nil {
		self, _ = next.Cluster.Node(r.ctl.name)
	}
	pools, changes := r.applyBackends(next)
	fronts, started, lns, fchanges, errs := r.applyFrontends(next, plan, pools)
	changes = append(changes, fchanges...)
	r.srv.limiter.SetMax(next.MaxConn)

	r.srv.mu.Lock()
	r.srv.cfg, r.srv.self = next, self
	r.srv.pools, r.srv.frontends = pools, fronts
	r.srv.reloads++
	ctx := r.srv.ctx
	r.srv.mu.Unlock()
	for i, f := range started {
		r.srv.serveFrontend(ctx, f, lns[i])
	}

	if next.Cluster != nil {
		if !reflect.DeepEqual(old.Cluster, next.Cluster) {
			changes = append(changes, "cluster")
		}
		r.ctl.cluster.SetPeers(peersOf(next.Cluster, r.ctl.name))
	}
	if old.Timeouts != next.Timeouts {
		changes = append(changes, "timeouts")
	}
	changes = append(changes, maxconnChanges(old, next)...)
	r.ctl.poke()
	r.log.Info("config reloaded", "fingerprint", next.Fingerprint, "changes", strings.Join(changes, "; "))
	if err := errors.Join(errs...); err != nil {
		r.log.Error("config reloaded, but a frontend has no listener", "err", err)
		return fmt.Errorf("config applied, but: %w", err)
	}
	return nil
}

// applyBackends updates the pools that stay, builds new ones and retires
// the gone, with their health checks and the election loop's watch; it
// returns the new set of pools and what changed.
func (r *reloader) applyBackends(next *config.Config) (map[string]*pool.Pool, []string) {
	oldPools, _ := r.srv.parts()
	var changes []string
	pools := make(map[string]*pool.Pool, len(next.Backends))
	var added []*pool.Pool
	for _, b := range next.Backends {
		p, ok := oldPools[b.Name]
		if !ok {
			p = pool.New(b, r.log.With("component", "pool"))
			r.srv.observe(p)
			added = append(added, p)
			changes = append(changes, "backend "+b.Name+" added")
		} else if change := r.updatePool(p, b, next.Timeouts.Drain); change != "" {
			changes = append(changes, change)
		}
		pools[b.Name] = p
	}
	for name, p := range oldPools {
		if _, ok := pools[name]; !ok {
			for _, s := range p.Servers() {
				r.srv.stopCheck(s)
				r.srv.retire(name, s, next.Timeouts.Drain)
			}
			r.ctl.watch.remove(p)
			changes = append(changes, "backend "+name+" removed")
		}
	}
	for _, p := range added {
		for _, s := range p.Servers() {
			if err := r.srv.startCheck(p, s); err != nil {
				r.log.Error("start health check", "backend", p.Name(), "server", s.Name(), "err", err)
			}
		}
		r.ctl.watch.add(p)
	}
	return pools, changes
}

// updatePool applies a backend's new config to its pool, restarting the
// checks that changed; it says what changed, "" for nothing.
func (r *reloader) updatePool(p *pool.Pool, b config.Backend, drain time.Duration) string {
	before := p.Config()
	if reflect.DeepEqual(before, b) {
		return ""
	}
	added, removed := p.Update(b)
	healthChanged := !reflect.DeepEqual(before.Health, b.Health)
	for _, s := range p.Servers() {
		if healthChanged || slices.Contains(added, s) {
			// Validated before; a failure here would be a file changed in
			// between, and the server keeps its previous check.
			if err := r.srv.startCheck(p, s); err != nil {
				r.log.Error("restart health check", "backend", b.Name, "server", s.Name(), "err", err)
			}
		}
	}
	for _, s := range removed {
		r.srv.stopCheck(s)
		r.srv.retire(b.Name, s, drain)
	}
	return fmt.Sprintf("backend %s: +%d -%d servers", b.Name, len(added), len(removed))
}

// applyFrontends carries out the plan: frontends changed in place, taking
// another's socket, or on a socket bound already; the gone ones stop. It
// returns every frontend in force, the new ones to start on their
// listeners, what changed, and the listeners that could not be had.
func (r *reloader) applyFrontends(next *config.Config, plan []frontendStep, pools map[string]*pool.Pool) (
	fronts, started []*frontend, lns []net.Listener, changes []string, errs []error) {
	_, oldFronts := r.srv.parts()
	going := make(map[*frontend]bool, len(oldFronts))
	for _, f := range oldFronts {
		going[f] = true
	}
	for _, st := range plan {
		fc := st.cfg
		if st.keep != nil {
			delete(going, st.keep)
			st.keep.f.SetBackend(pools[fc.Backend])
			st.keep.f.SetMaxConn(fc.MaxConn)
			if st.keep.cfg != fc {
				changes = append(changes, "frontend "+fc.Name+" changed in place")
			}
			kept := &frontend{cfg: fc, f: st.keep.f, stop: st.keep.stop}
			kept.gate.Store(st.keep.gate.Load())
			fronts = append(fronts, kept)
			continue
		}
		if st.from != nil {
			ln, err := st.from.f.HandOver()
			if err != nil {
				// Its listener died meanwhile: bind anew.
				ln, err = proxy.Listen(r.srv.context(), fc.Bind)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("frontend %s: %w", fc.Name, err))
			}
			st.ln = ln
			changes = append(changes, fmt.Sprintf("frontend %s took over %s from %s", fc.Name, fc.Bind, st.from.cfg.Name))
		} else {
			changes = append(changes, fmt.Sprintf("frontend %s listening on %s", fc.Name, fc.Bind))
		}
		nf := r.srv.newFrontend(next, fc, pools)
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
	return fronts, started, lns, changes, errs
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
func (r *reloader) planFrontends(old []*frontend, next []config.Frontend) ([]frontendStep, error) {
	byName := make(map[string]*frontend, len(old))
	byBind := make(map[netip.AddrPort]*frontend, len(old))
	for _, f := range old {
		byName[f.cfg.Name] = f
		if f.f.ListenErr() == nil {
			byBind[f.cfg.Bind] = f
		}
	}
	ctx := r.srv.context()
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
	if !reflect.DeepEqual(old.BGP, next.BGP) {
		need("bgp")
	}
	if old.Admin != next.Admin {
		need("admin")
	}
	if !reflect.DeepEqual(old.Hooks, next.Hooks) {
		need("hooks") // the hook runner is built once, at start
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
