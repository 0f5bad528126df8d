package events

import (
	"fmt"
	"sync"
	"time"
)

// Kind names what happened.
type Kind string

// The kinds of event the daemon publishes; the strings are the JSON and
// config (hooks:) names.
const (
	VIPClaimed   Kind = "vip_claimed"
	VIPReleased  Kind = "vip_released"
	ServerUp     Kind = "server_up"
	ServerDown   Kind = "server_down"
	MemberJoined Kind = "member_joined"
	MemberLeft   Kind = "member_left"
	MemberFailed Kind = "member_failed"
)

// Kinds returns every kind of event, in a stable order for docs and errors.
func Kinds() []Kind {
	return []Kind{VIPClaimed, VIPReleased, ServerUp, ServerDown, MemberJoined, MemberLeft, MemberFailed}
}

// ParseKind returns the kind called s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown event %q: want one of %v", s, Kinds())
}

// Event is one state change and its facts. Fields that do not apply to
// the kind are empty.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    Kind      `json:"event"`
	Node    string    `json:"node,omitempty"` // the node that saw it, or the member concerned
	VIP     string    `json:"vip,omitempty"`
	Backend string    `json:"backend,omitempty"`
	Server  string    `json:"server,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// DefaultRing is how many past events a bus keeps for --since.
const DefaultRing = 1024

// subBuffer is how many events a subscriber may lag before it loses some.
const subBuffer = 256

// Bus fans events out. Publish never blocks: a subscriber that does not
// keep up misses events and learns how many from Dropped. It is safe for
// concurrent use; the zero value is not usable, call New.
type Bus struct {
	mu   sync.Mutex
	seq  uint64
	ring []Event // circular, len <= cap
	next int     // where the next event goes once the ring is full
	subs map[*Sub]struct{}
	now  func() time.Time
}

// New returns a bus that keeps the last ring events (DefaultRing if ring
// is not positive).
func New(ring int) *Bus {
	if ring <= 0 {
		ring = DefaultRing
	}
	return &Bus{ring: make([]Event, 0, ring), subs: map[*Sub]struct{}{}, now: time.Now}
}

// Publish stamps e with a sequence number (and the time, when unset),
// keeps it in the ring and hands it to every subscriber.
func (b *Bus) Publish(e Event) Event {
	if b == nil {
		return e
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Seq = b.seq
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	if len(b.ring) < cap(b.ring) {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.next] = e
		b.next = (b.next + 1) % len(b.ring)
	}
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
	}
	return e
}

// Since returns the kept events at or after t, oldest first.
func (b *Bus) Since(t time.Time) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sinceLocked(t)
}

func (b *Bus) sinceLocked(t time.Time) []Event {
	var out []Event
	for i := range b.ring {
		e := b.ring[(b.next+i)%len(b.ring)]
		if !e.Time.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// Subscribe returns the kept events at or after since (none for a zero
// since) and a subscription receiving every event published from now
// on, with no gap and no repeat between the two. Close the subscription
// when done.
func (b *Bus) Subscribe(since time.Time) ([]Event, *Sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &Sub{bus: b, ch: make(chan Event, subBuffer)}
	b.subs[s] = struct{}{}
	var past []Event
	if !since.IsZero() {
		past = b.sinceLocked(since)
	}
	return past, s
}

// Sub is one subscriber's feed.
type Sub struct {
	bus     *Bus
	ch      chan Event
	once    sync.Once
	mu      sync.Mutex
	dropped int
}

// C receives the events; it is never closed, select on your own context.
func (s *Sub) C() <-chan Event { return s.ch }

// Dropped returns how many events were lost because C was not read in
// time, and resets the count.
func (s *Sub) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.dropped
	s.dropped = 0
	return n
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		s.bus.mu.Unlock()
	})
}
