package daemon

import (
	"context"
	"sync"

	"halb/internal/pool"
)

// poolWatch forwards each pool's change signal to the election loop while
// that loop runs, so a server going down starts a round at once. A reload
// adds and removes pools, and their forwarders with them.
type poolWatch struct {
	mu    sync.Mutex
	ctx   context.Context // the election loop's; nil while it does not run
	poke  func()
	stops map[*pool.Pool]context.CancelFunc
	wg    sync.WaitGroup
}

// start forwards from now until ctx ends, for the pools added from now on.
func (w *poolWatch) start(ctx context.Context, poke func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ctx, w.poke = ctx, poke
	w.stops = map[*pool.Pool]context.CancelFunc{}
}

// add forwards p's changes; it does nothing before start, or for a pool
// already forwarded.
func (w *poolWatch) add(p *pool.Pool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil || w.stops[p] != nil {
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	w.stops[p] = cancel
	poke, ch := w.poke, p.Changed()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				poke()
			}
		}
	}()
}

// remove stops forwarding p's changes.
func (w *poolWatch) remove(p *pool.Pool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cancel := w.stops[p]; cancel != nil {
		cancel()
		delete(w.stops, p)
	}
}

// wait returns once every forwarder has ended; call it after the context
// given to start is done.
func (w *poolWatch) wait() { w.wg.Wait() }
