package pool

import (
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"

	"halb/internal/config"
)

// Pool is one backend: its servers and the balancing state shared by every
// frontend that sends connections to it. It is safe for concurrent use.
type Pool struct {
	name        string
	log         *slog.Logger
	closeOnDown atomic.Bool
	panicOn     atomic.Bool  // cfg.PanicRouting, read without mu
	passiveFall atomic.Int64 // cfg.PassiveFall, read without mu
	connecting  atomic.Int64 // connects in flight to any server (passive.go)
	// panicking is true while every enabled server is down by results
	// and panic routing forwards to them anyway; panicMu orders its
	// transitions so each is logged once.
	panicking atomic.Bool
	panicMu   sync.Mutex

	// mu guards the config, the server list (replaced, never changed in
	// place, by Update) and the balancing state (smooth round-robin
	// weights, each server's weight and backup flag, the leastconn
	// cursor). It is held only for one scan of the server list.
	mu      sync.Mutex
	cfg     config.Backend
	servers []*Server
	lcNext  int

	changed  chan struct{}
	observer atomic.Pointer[func(Transition)] // see SetObserver
}

// New builds a pool for cfg. It does no I/O. Every server starts in the
// unknown state, which counts as not up: the health runner probes at start
// and the first result decides at once, so a fresh daemon does not send
// clients to servers nobody has checked.
func New(cfg config.Backend, log *slog.Logger) *Pool {
	p := &Pool{
		name:    cfg.Name,
		cfg:     cfg,
		log:     log.With("backend", cfg.Name),
		changed: make(chan struct{}, 1),
	}
	p.closeOnDown.Store(cfg.CloseOnDown)
	p.panicOn.Store(cfg.PanicRouting)
	p.passiveFall.Store(int64(cfg.PassiveFall))
	p.servers = make([]*Server, len(cfg.Servers))
	for i, sc := range cfg.Servers {
		p.servers[i] = newServer(p, sc)
	}
	return p
}

// Update applies a reloaded config of the same backend. Servers that keep
// their name and address stay, with their health state, counters and open
// connections; their weight, backup flag and rise/fall follow the new
// config. Servers that are new start unknown, like at start. The servers
// that are gone are returned: the caller decides when their open
// connections end. Update never touches a connection.
func (p *Pool) Update(cfg config.Backend) (added, removed []*Server) {
	p.mu.Lock()
	old := make(map[string]*Server, len(p.servers))
	for _, s := range p.servers {
		old[s.name] = s
	}
	next := make([]*Server, 0, len(cfg.Servers))
	for _, sc := range cfg.Servers {
		if s, ok := old[sc.Name]; ok && s.addr == sc.Address {
			delete(old, sc.Name)
			s.weight, s.backup = max(sc.Weight, 1), sc.Backup
			s.reconfigure(sc, cfg.Health)
			next = append(next, s)
			continue
		}
		s := newServerFor(p, sc, cfg.Health)
		added = append(added, s)
		next = append(next, s)
	}
	for _, s := range p.servers {
		if _, gone := old[s.name]; gone {
			removed = append(removed, s)
		}
	}
	p.cfg, p.servers = cfg, next
	p.closeOnDown.Store(cfg.CloseOnDown)
	p.panicOn.Store(cfg.PanicRouting)
	p.passiveFall.Store(int64(cfg.PassiveFall))
	p.mu.Unlock()
	p.notify()
	return added, removed
}

// Name returns the backend's name.
func (p *Pool) Name() string { return p.name }

// Config returns the backend configuration in force.
func (p *Pool) Config() config.Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Servers returns the pool's servers in configuration order. The slice is
// shared; callers must not modify it.
func (p *Pool) Servers() []*Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.servers
}

// Attempts is how many servers one connection may try: the first plus
// the configured retries, at most once per server.
func (p *Pool) Attempts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(min(p.cfg.Retries+1, len(p.servers)), 1)
}

// Server returns the server called name.
func (p *Pool) Server(name string) (*Server, bool) {
	for _, s := range p.Servers() {
		if s.name == name {
			return s, true
		}
	}
	return nil, false
}

// Healthy reports whether any server can take a new connection.
func (p *Pool) Healthy() bool {
	for _, s := range p.Servers() {
		if s.usable() {
			return true
		}
	}
	return false
}

// Changed returns a channel that receives a value after any server's
// up/down or admin state changed. Notifications coalesce: one value may
// stand for several changes, so a receiver should re-read the state it
// cares about (for example Healthy) rather than count signals.
func (p *Pool) Changed() <-chan struct{} { return p.changed }

// Panic reports whether the backend is in panic: panic routing is on, no
// server can take a connection by its checks, and new connections go to
// the enabled servers that checks marked down.
func (p *Pool) Panic() bool { return p.panicking.Load() }

// updatePanic re-derives the panic state after a server changed and logs
// when it begins or ends. A server not checked yet does not count as down,
// so a fresh daemon does not forward blindly before the first results.
func (p *Pool) updatePanic() {
	p.panicMu.Lock()
	defer p.panicMu.Unlock()
	usable, down := 0, 0
	for _, s := range p.Servers() {
		switch {
		case s.usable():
			usable++
		case s.panicUsable():
			down++
		}
	}
	now := p.panicOn.Load() && usable == 0 && down > 0
	if p.panicking.Swap(now) == now {
		return
	}
	if now {
		p.log.Error("PANIC: every server is down by its checks; forwarding new connections to them anyway (panic_routing). Fix the servers or the check; this node is not eligible for the VIP meanwhile", "servers_down", down)
		return
	}
	p.log.Warn("panic over: routing by health checks again", "servers_up", usable)
}

// notify re-derives the panic state and signals Changed without ever
// blocking the caller (health runner goroutines and the proxy's dial path
// call it).
func (p *Pool) notify() {
	p.updatePanic()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Pick chooses a server for a new connection from client, skipping the
// servers in tried (those that already failed for this connection). Only
// servers that are up and administratively enabled qualify; backup
// servers are used only when no non-backup server qualifies. In panic
// (see Panic) the enabled servers that checks marked down qualify, those
// whose checks still got an answer first. It returns nil when no server
// qualifies. Pick does not allocate.
func (p *Pool) Pick(client netip.Addr, tried []*Server) *Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	rounds := []round{roundMain, roundBackup}
	if p.panicking.Load() {
		rounds = []round{roundMain, roundBackup, roundPanicAnswered, roundPanic}
	}
	for _, r := range rounds {
		if s := p.pickAmong(client, tried, r); s != nil {
			return s
		}
	}
	return nil
}

// round is one pass of Pick over the servers, each with its own test.
type round uint8

const (
	roundMain          round = iota // usable, not backup
	roundBackup                     // usable backup servers
	roundPanicAnswered              // panic: down, but the last check got an answer
	roundPanic                      // panic: any enabled server that checks marked down
)

// candidate reports whether s may be picked in round r.
func candidate(s *Server, tried []*Server, r round) bool {
	var ok bool
	switch r {
	case roundMain:
		ok = !s.backup && s.usable()
	case roundBackup:
		ok = s.backup && s.usable()
	case roundPanicAnswered:
		ok = s.panicUsable() && s.answered()
	case roundPanic:
		ok = s.panicUsable()
	}
	if !ok {
		return false
	}
	for _, t := range tried {
		if t == s {
			return false
		}
	}
	return true
}

func (p *Pool) pickAmong(client netip.Addr, tried []*Server, r round) *Server {
	switch p.cfg.Balance {
	case config.LeastConn:
		return p.pickLeastConn(tried, r)
	case config.Source:
		return p.pickSource(client, tried, r)
	default:
		return p.pickRoundRobin(tried, r)
	}
}

// pickRoundRobin is smooth weighted round robin: every candidate gains its
// weight, the one with the highest running total wins and pays back the
// sum of weights. Over any window the picks are spread evenly in
// proportion to weight, without the bursts of plain weighted rotation.
func (p *Pool) pickRoundRobin(tried []*Server, r round) *Server {
	var best *Server
	total := 0
	for _, s := range p.servers {
		if !candidate(s, tried, r) {
			continue
		}
		s.rrCurrent += s.weight
		total += s.weight
		if best == nil || s.rrCurrent > best.rrCurrent {
			best = s
		}
	}
	if best != nil {
		best.rrCurrent -= total
	}
	return best
}

// pickLeastConn picks the candidate with the fewest active connections per
// unit of weight. The scan starts after the previous winner, so ties are
// broken in rotation rather than always favouring the first server.
func (p *Pool) pickLeastConn(tried []*Server, r round) *Server {
	n := len(p.servers)
	var best *Server
	bestIdx := 0
	var bestActive int64
	for i := range n {
		idx := (p.lcNext + i) % n
		s := p.servers[idx]
		if !candidate(s, tried, r) {
			continue
		}
		a := s.active.Load()
		// a/s.weight < bestActive/best.weight, without division.
		if best == nil || a*int64(best.weight) < bestActive*int64(s.weight) {
			best, bestIdx, bestActive = s, idx, a
		}
	}
	if best != nil {
		p.lcNext = (bestIdx + 1) % n
	}
	return best
}

// pickSource is weighted rendezvous (highest random weight) hashing of the
// client address: each candidate scores the client independently and the
// best score wins. When a server leaves, only its own clients move; the
// rest keep their server. Scores depend on server names and addresses,
// not list positions, so every halb node maps a client the same way.
func (p *Pool) pickSource(client netip.Addr, tried []*Server, r round) *Server {
	ch := addrHash(client)
	var best *Server
	bestScore := math.Inf(-1)
	for _, s := range p.servers {
		if !candidate(s, tried, r) {
			continue
		}
		h := mix64(ch ^ s.seed)
		// u is uniform in (0,1); w/-ln(u) makes a server's chance of
		// winning proportional to its weight.
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := float64(s.weight) / -math.Log(u)
		if score > bestScore {
			best, bestScore = s, score
		}
	}
	return best
}

// addrHash hashes an address so that an IPv4 client and its IPv4-mapped
// IPv6 form hash alike.
func addrHash(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	return mix64(hi ^ mix64(lo^0x9e3779b97f4a7c15))
}

// serverSeed derives a server's stable hash identity from its name and address.
func serverSeed(sc config.Server) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(sc.Name))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(sc.Address.String()))
	return mix64(h.Sum64())
}

// mix64 is the splitmix64 finaliser: it spreads every input bit over the
// whole output so nearby addresses get unrelated scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
