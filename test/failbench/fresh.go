package failbench

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"halb/test/lab"
)

// The fresh-connection probe of a long-lived repetition.
const (
	// freshEvery is how often a new connection starts: the resolution of
	// "new connections work again".
	freshEvery = 10 * time.Millisecond
	// freshTimeout bounds one attempt below the second after which a SYN
	// lost to the dead holder is sent again: an attempt begun before the
	// new path was there never counts as having worked.
	freshTimeout = 900 * time.Millisecond
	// freshMax bounds the attempts of one probe (150 s at freshEvery).
	freshMax = 15000
)

// freshProbe measures when new connections work again after a failure,
// to set the long-lived clients' recovery against it: every freshEvery it
// starts a new echo connection through the VIP from the client, without
// waiting for the ones in flight, so a lost SYN costs one attempt and not
// the probe's resolution (a sequential probe with a timeout would report
// the timeout).
type freshProbe struct {
	cancel context.CancelFunc
	loop   sync.WaitGroup
	tries  sync.WaitGroup

	mu     sync.Mutex
	worked []freshTry
}

// freshTry is one attempt that worked.
type freshTry struct{ start, end time.Time }

// startFresh starts probing target from the lab's client.
func startFresh(ctx context.Context, l *lab.Lab, target netip.AddrPort) *freshProbe {
	ctx, cancel := context.WithCancel(ctx)
	p := &freshProbe{cancel: cancel}
	p.loop.Go(func() {
		t := time.NewTicker(freshEvery)
		defer t.Stop()
		for range freshMax {
			p.tries.Go(func() {
				start := time.Now()
				actx, done := context.WithTimeout(context.WithoutCancel(ctx), freshTimeout)
				defer done()
				if l.EchoOnce(actx, target) == nil {
					p.mu.Lock()
					p.worked = append(p.worked, freshTry{start: start, end: time.Now()})
					p.mu.Unlock()
				}
			})
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return p
}

// stop ends the probe and waits for the attempts in flight (each bounded
// by freshTimeout).
func (p *freshProbe) stop() {
	p.cancel()
	p.loop.Wait()
	p.tries.Wait()
}

// workingAfter is when, after t0, began the first connection that
// worked among those begun after from (the failure in place: a kill's
// signal sent, a link down): the moment the new path was there. Its end
// is not the measure: a connection begun into the reconnection storm
// finishes as late as the storm lets it, which is what the long-lived
// clients' own numbers measure. False if none worked.
func (p *freshProbe) workingAfter(t0, from time.Time) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, w := range p.worked {
		if !w.start.Before(from) && (first.IsZero() || w.start.Before(first)) {
			first = w.start
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(t0), true
}
