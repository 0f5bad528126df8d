package proxy

import "sync/atomic"

// Limiter caps concurrent client connections across every frontend that
// shares it (the global maxconn). A nil Limiter, or one built with n <= 0,
// admits everything but still counts.
type Limiter struct {
	max atomic.Int64
	cur atomic.Int64
}

// NewLimiter returns a limiter admitting at most n concurrent connections;
// n <= 0 means unlimited.
func NewLimiter(n int) *Limiter {
	l := &Limiter{}
	l.max.Store(int64(n))
	return l
}

// SetMax changes the limit for connections admitted from now on (a
// reload); connections above a lowered limit are not closed.
func (l *Limiter) SetMax(n int) { l.max.Store(int64(n)) }

// Current returns the number of connections holding a slot.
func (l *Limiter) Current() int64 {
	if l == nil {
		return 0
	}
	return l.cur.Load()
}

// Max returns the limit; 0 means unlimited.
func (l *Limiter) Max() int64 {
	if l == nil || l.max.Load() <= 0 {
		return 0
	}
	return l.max.Load()
}

// acquire takes a slot, reporting false when the limit is reached.
func (l *Limiter) acquire() bool {
	if l == nil {
		return true
	}
	return acquireSlot(&l.cur, l.max.Load())
}

// release gives back a slot taken by acquire.
func (l *Limiter) release() {
	if l != nil {
		l.cur.Add(-1)
	}
}

// acquireSlot increments cur unless that would exceed limit (limit <= 0:
// unlimited). Optimistic add-then-undo keeps it one atomic op when there
// is room.
func acquireSlot(cur *atomic.Int64, limit int64) bool {
	if n := cur.Add(1); limit > 0 && n > limit {
		cur.Add(-1)
		return false
	}
	return true
}
