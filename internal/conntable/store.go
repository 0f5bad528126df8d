package conntable

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Source names one replica: the node that sent the table and its VIP.
type Source struct {
	Node string
	VIP  netip.Addr
}

// Limits bound what a Store holds.
type Limits struct {
	// MaxConns is the most connections kept per replica.
	MaxConns int
	// MaxReplicas is the most (node, VIP) replicas kept.
	MaxReplicas int
	// StaleAfter is how long a replica is kept once its node falls
	// silent. It must outlast a failover: the node taking over reads the
	// dead holder's replica after detecting the death.
	StaleAfter time.Duration
}

// DefaultLimits fit a control plane's VIPs and their clients: 65 536
// connections × 32 replicas is at most ~200 MB in the worst case and a
// few MB in practice (a real table holds thousands).
var DefaultLimits = Limits{MaxConns: 65536, MaxReplicas: 32, StaleAfter: 5 * time.Minute}

// Store is a node's replicas of its peers' tables. It is safe for
// concurrent use.
type Store struct {
	mu       sync.Mutex
	limits   Limits
	replicas map[Source]*Replica
}

// NewStore returns an empty store; zero limits take their defaults.
func NewStore(l Limits) *Store {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultLimits.MaxConns
	}
	if l.MaxReplicas <= 0 {
		l.MaxReplicas = DefaultLimits.MaxReplicas
	}
	if l.StaleAfter <= 0 {
		l.StaleAfter = DefaultLimits.StaleAfter
	}
	return &Store{limits: l, replicas: make(map[Source]*Replica)}
}

// Apply takes in a chunk that node sent, received at now. It returns the
// source it belongs to (for a snapshot request on NeedSnapshot).
func (s *Store) Apply(node string, b []byte, now time.Time) (Source, Status, error) {
	c, err := decode(b)
	if err != nil {
		return Source{}, Stale, fmt.Errorf("from %s: %w", node, err)
	}
	src := Source{Node: node, VIP: c.vip}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.replicas[src]
	if !ok {
		if len(s.replicas) >= s.limits.MaxReplicas {
			s.expire(now)
		}
		if len(s.replicas) >= s.limits.MaxReplicas {
			return src, Stale, fmt.Errorf("from %s: already %d connection tables, not keeping one for %s", node, len(s.replicas), c.vip)
		}
		r = NewReplica(s.limits.MaxConns)
		s.replicas[src] = r
	}
	st, err := r.apply(c, now)
	return src, st, err
}

// Conns returns the connections of src's table as last received, and
// whether there is such a replica.
func (s *Store) Conns(src Source) ([]Conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.replicas[src]
	if !ok {
		return nil, false
	}
	return r.Conns(), true
}

// Stat is one replica's size, for status and metrics.
type Stat struct {
	Source
	Conns, Dropped int
	Version        uint64
	Synced         bool
	Heard          time.Time
}

// Stats describes every replica.
func (s *Store) Stats() []Stat {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Stat, 0, len(s.replicas))
	for src, r := range s.replicas {
		v, synced := r.Version()
		out = append(out, Stat{Source: src, Conns: r.Len(), Dropped: r.Dropped(), Version: v, Synced: synced, Heard: r.Heard()})
	}
	return out
}

// Forget drops src's replica, once its connections have been tickled.
func (s *Store) Forget(src Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.replicas, src)
}

// Expire drops the replicas not heard from for StaleAfter and returns
// how many.
func (s *Store) Expire(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expire(now)
}

func (s *Store) expire(now time.Time) int {
	n := 0
	for src, r := range s.replicas {
		if now.Sub(r.Heard()) >= s.limits.StaleAfter {
			delete(s.replicas, src)
			n++
		}
	}
	return n
}
