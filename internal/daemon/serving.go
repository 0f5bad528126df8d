package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"halb/internal/config"
	"halb/internal/events"
	"halb/internal/health"
	"halb/internal/metrics"
	"halb/internal/pool"
	"halb/internal/proxy"
)

// serving is the config in force and the proxy group built from it:
// pools with their health checks, and frontends. A reload replaces the
// config, pools and frontends whole (copy on write); read them with
// current and parts.
type serving struct {
	log     *slog.Logger
	clock   health.Clock
	limiter *proxy.Limiter
	metrics *metrics.Metrics
	// poke asks the election loop for a round, e.g. when a frontend stops.
	poke func()
	bus  *events.Bus // state changes, for hooks and `halb events` (events.go)
	node string      // this node's name, for the events

	mu        sync.Mutex
	cfg       *config.Config
	self      config.Node // zero without a cluster
	pools     map[string]*pool.Pool
	frontends []*frontend
	// reloads counts replacements of frontends, for clientsVersion.
	reloads uint64
	// Health checks run one goroutine per server under ctx (the proxy
	// group's); a reload stops and starts them one by one.
	ctx      context.Context
	checkers map[*pool.Server]context.CancelFunc
	// tasks counts the goroutines serving started: checks, frontends and
	// the closing of retired servers' connections.
	tasks sync.WaitGroup
	// dead: a hard drill closed the listeners; frontends a reload starts
	// meanwhile start closed too.
	dead bool
}

// frontend is a running listener and the config it was built from.
type frontend struct {
	cfg  config.Frontend
	f    *proxy.Frontend
	stop context.CancelFunc // set once it runs; stops accepting and drains
	// gate is its listener, which a hard drill closes and opens again
	// (playdead.go); nil if the frontend had to bind its own.
	gate atomic.Pointer[gateListener]
}

func (s *serving) newFrontend(cfg *config.Config, fc config.Frontend, pools map[string]*pool.Pool) *frontend {
	return &frontend{cfg: fc, f: proxy.NewFrontend(fc, pools[fc.Backend], proxy.Options{
		Timeouts: cfg.Timeouts,
		ConnLog:  cfg.Log.Connections,
		Limit:    s.limiter,
	}, s.log.With("component", "proxy", "frontend", fc.Name))}
}

// parts returns the pools and frontends in force; a reload replaces both
// collections, never changes them in place.
func (s *serving) parts() (map[string]*pool.Pool, []*frontend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pools, s.frontends
}

// current returns the config in force and this node's entry in it; a
// reload replaces both.
func (s *serving) current() (*config.Config, config.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg, s.self
}

// context is the context the proxy group runs under.
func (s *serving) context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

// startCheck runs the health check of server sv of pool p until the proxy
// group stops or a reload replaces it.
func (s *serving) startCheck(p *pool.Pool, sv *pool.Server) error {
	hc := p.Config().Health
	checker, err := health.NewChecker(hc)
	if err != nil {
		return fmt.Errorf("backend %s: %w", p.Name(), err)
	}
	sc := sv.Config()
	target := observed{Target: sv, m: s.metrics, backend: p.Name(), server: sc.Name}
	r := health.NewRunner(checker, sc.Address, hc, target, s.clock,
		s.log.With("component", "health", "backend", p.Name(), "server", sc.Name))
	s.mu.Lock()
	ctx, cancel := context.WithCancel(s.ctx)
	if old := s.checkers[sv]; old != nil {
		old()
	}
	s.checkers[sv] = cancel
	s.mu.Unlock()
	s.tasks.Go(func() { _ = r.Run(ctx) }) // returns nil when cancelled
	return nil
}

// stopCheck ends the health check of sv.
func (s *serving) stopCheck(sv *pool.Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cancel := s.checkers[sv]; cancel != nil {
		cancel()
		delete(s.checkers, sv)
	}
}

// serveFrontend runs f on ln (nil: f binds its address itself) until ctx
// ends or the frontend is stopped, and waits until it accepts or failed.
// A frontend that fails does not stop the daemon: it shows in status and
// makes the node ineligible. The listener is wrapped so that a hard drill
// can close it and open it again.
func (s *serving) serveFrontend(ctx context.Context, f *frontend, ln net.Listener) {
	if ln == nil {
		// Bind here to have a listener to wrap; on failure Run tries once
		// more and records why the frontend does not listen.
		if l, err := proxy.Listen(ctx, f.cfg.Bind); err == nil {
			ln = l
		}
	}
	if ln != nil {
		ln = s.gate(f, ln)
	}
	fctx, stop := context.WithCancel(ctx)
	s.mu.Lock()
	f.stop = stop
	s.mu.Unlock()
	s.tasks.Go(func() {
		var err error
		if ln != nil {
			err = f.f.Serve(fctx, ln)
		} else {
			err = f.f.Run(fctx)
		}
		if err != nil {
			s.log.Error("frontend stopped listening", "frontend", f.cfg.Name, "err", err)
			s.poke()
		}
	})
	select {
	case <-f.f.Ready():
	case <-f.f.Closed():
	}
}

// retire lets the open connections of a server removed by a reload finish,
// and closes those still open after grace (0: at once).
func (s *serving) retire(backend string, sv *pool.Server, grace time.Duration) {
	ctx := s.context()
	s.log.Info("server removed by reload; its open connections may finish", "backend", backend, "server", sv.Name(), "grace", grace)
	s.tasks.Go(func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		if n := sv.CloseConnections(); n > 0 {
			s.log.Info("closed connections of a removed server after the grace period", "backend", backend, "server", sv.Name(), "closed", n)
		}
	})
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

// clients appends every frontend's open sessions' addresses to dst.
func (s *serving) clients(dst []proxy.ClientPair) []proxy.ClientPair {
	_, fronts := s.parts()
	for _, f := range fronts {
		dst = f.f.Clients(dst)
	}
	return dst
}

// clientsVersion changes whenever clients might list something else: a
// session opened or ended, or a reload replaced the frontends. Each
// frontend's count only grows, so within one set of frontends their sum
// moves on every change; the reload count sets sets apart.
func (s *serving) clientsVersion() uint64 {
	s.mu.Lock()
	fronts, v := s.frontends, s.reloads<<40
	s.mu.Unlock()
	for _, f := range fronts {
		v += f.f.SessionsVersion()
	}
	return v
}

// closeSessions closes the sessions of pairs started before before, with
// a reset, and returns how many.
func (s *serving) closeSessions(pairs map[proxy.ClientPair]struct{}, before time.Time, reason string) int {
	_, fronts := s.parts()
	n := 0
	for _, f := range fronts {
		n += f.f.CloseSessions(pairs, before, reason)
	}
	return n
}

// closeClients closes every session whose client connected to addr,
// cleanly, and returns how many.
func (s *serving) closeClients(addr netip.Addr, reason string) int {
	_, fronts := s.parts()
	n := 0
	for _, f := range fronts {
		n += f.f.CloseClients(addr, reason)
	}
	return n
}
