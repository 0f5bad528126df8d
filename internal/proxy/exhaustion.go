package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pressure pauses a frontend's accepts after a session could not dial for
// lack of local resources. The accept that took the last descriptor
// succeeded, so accept errors alone would not slow the loop: without the
// pause it would take every queued client and reset it at full speed,
// where waiting keeps them queued until descriptors are free again.
type pressure struct {
	until atomic.Int64 // unix nanoseconds; accepts wait until then

	mu      sync.Mutex
	backoff time.Duration
}

// note records one exhaustion at now and returns the pause it sets: it
// doubles while exhaustion repeats and starts over once a pause has passed
// by acceptBackoffMax without one.
func (p *pressure) note(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.UnixNano() > p.until.Load()+int64(acceptBackoffMax) {
		p.backoff = 0
	}
	p.backoff = min(max(2*p.backoff, acceptBackoffMin), acceptBackoffMax)
	p.until.Store(now.Add(p.backoff).UnixNano())
	return p.backoff
}

// wait blocks until the pause set by note is over or ctx ends.
func (p *pressure) wait(ctx context.Context) {
	d := time.Duration(p.until.Load() - time.Now().UnixNano())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
