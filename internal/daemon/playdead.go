package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"halb/internal/proxy"
)

// A hard drill makes the holder play dead as a killed process: besides
// going silent on gossip (cluster.Silence), it leaves its VIPs on the
// interface unannounced (vip.Announcer.PlayDead) and closes its proxy
// listeners. Clients' SYNs that still reach it then get a reset from the
// kernel, as after kill -9, and retry at once, instead of waiting out
// their timeout on an address that vanished.

// gateListener is a frontend's listener that a hard drill can close and
// open again on the same address while the frontend keeps serving: while
// closed, Accept waits. It passes through deadlines, so a reload can hand
// it over to another frontend.
type gateListener struct {
	bind netip.AddrPort // where to bind again: the first listener's address
	addr net.Addr

	mu       sync.Mutex
	ln       net.Listener  // nil while dead
	changed  chan struct{} // closed and replaced when ln, deadline or closed change
	deadline time.Time
	closed   bool
}

// newGateListener wraps ln, bound for bind (whose port 0 is replaced by
// the one the kernel picked).
func newGateListener(bind netip.AddrPort, ln net.Listener) *gateListener {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		bind = netip.AddrPortFrom(bind.Addr(), uint16(a.Port))
	}
	return &gateListener{bind: bind, addr: ln.Addr(), ln: ln, changed: make(chan struct{})}
}

// signalLocked wakes Accepts waiting for a change; g.mu is held.
func (g *gateListener) signalLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Accept returns the next connection; while dead it waits for the listener
// to open again, for a deadline or for Close.
func (g *gateListener) Accept() (net.Conn, error) {
	for {
		g.mu.Lock()
		ln, changed, deadline, closed := g.ln, g.changed, g.deadline, g.closed
		g.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("accept on %s: %w", g.bind, net.ErrClosed)
		}
		if ln == nil {
			if err := waitChange(changed, deadline); err != nil {
				return nil, fmt.Errorf("accept on %s: %w", g.bind, err)
			}
			continue
		}
		c, err := ln.Accept()
		if err != nil {
			g.mu.Lock()
			died := g.ln != ln && !g.closed
			g.mu.Unlock()
			if died {
				continue // closed by the drill: wait for it to open again
			}
		}
		return c, err
	}
}

// waitChange waits until changed is closed, or returns a timeout error
// once deadline (zero: none) passed.
func waitChange(changed <-chan struct{}, deadline time.Time) error {
	if deadline.IsZero() {
		<-changed
		return nil
	}
	left := time.Until(deadline)
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	}
	return nil
}

// Close closes the listener for good.
func (g *gateListener) Close() error {
	g.mu.Lock()
	ln := g.ln
	g.ln, g.closed = nil, true
	g.signalLocked()
	g.mu.Unlock()
	if ln != nil {
		return ln.Close()
	}
	return nil
}

// Addr is the address the listener was first bound to.
func (g *gateListener) Addr() net.Addr { return g.addr }

// SetDeadline sets the deadline of Accept, kept across a drill.
func (g *gateListener) SetDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deadline = t
	g.signalLocked()
	if dl, ok := g.ln.(interface{ SetDeadline(time.Time) error }); ok {
		if err := dl.SetDeadline(t); err != nil {
			return fmt.Errorf("set deadline on %s: %w", g.bind, err)
		}
	}
	return nil
}

// die closes the socket, as a process's exit does: connections queued and
// to come are reset by the kernel.
func (g *gateListener) die() {
	g.mu.Lock()
	ln := g.ln
	g.ln = nil
	g.signalLocked()
	g.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
}

// revive binds the address again, unless the listener is open or closed
// for good.
func (g *gateListener) revive(ctx context.Context) error {
	g.mu.Lock()
	skip := g.ln != nil || g.closed
	g.mu.Unlock()
	if skip {
		return nil
	}
	ln, err := proxy.Listen(ctx, g.bind)
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", g.bind, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.ln != nil {
		return ln.Close()
	}
	if !g.deadline.IsZero() {
		if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
			_ = dl.SetDeadline(g.deadline) // a fresh TCP listener accepts any deadline
		}
	}
	g.ln = ln
	g.signalLocked()
	return nil
}

// listening reports whether the socket is open (true for nil: a frontend
// that binds its own listener).
func (g *gateListener) listening() bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ln != nil
}

// playDead closes (dead) or opens again (!dead) every frontend's listener;
// frontends started meanwhile, by a reload, follow. It returns the
// listeners that could not be opened again, to retry.
func (s *serving) playDead(dead bool) error {
	s.mu.Lock()
	s.dead = dead
	fronts, ctx := s.frontends, s.ctx
	s.mu.Unlock()
	var errs []error
	for _, f := range fronts {
		g := f.gate.Load()
		if g == nil {
			continue
		}
		if dead {
			g.die()
		} else if err := g.revive(ctx); err != nil {
			errs = append(errs, fmt.Errorf("frontend %s: %w", f.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// gate wraps ln for f, once: a listener handed over by a reload is one
// already, and stays dead if the node plays dead.
func (s *serving) gate(f *frontend, ln net.Listener) *gateListener {
	g, ok := ln.(*gateListener)
	if !ok {
		g = newGateListener(f.cfg.Bind, ln)
	}
	f.gate.Store(g)
	s.mu.Lock()
	dead := s.dead
	s.mu.Unlock()
	if dead {
		g.die()
	}
	return g
}

// deadness is the controller's memory of a hard drill beyond gossip.
type deadness struct {
	dead      bool   // listeners closed (or not all open again) since the drill began
	thawed    bool   // the announcers came back already
	reopenErr string // the last failure to open the listeners again, logged once
}

// die plays dead as a killed process for a hard drill: VIPs left on the
// interface unannounced, proxy listeners closed. The gossip side is
// cluster.Silence's.
func (c *controller) die() {
	c.mu.Lock()
	c.dead = deadness{dead: true}
	c.mu.Unlock()
	_ = c.srv.playDead(true) // closing fails nothing
	for _, a := range c.announcers {
		a.a.PlayDead(true)
	}
	c.log.Warn("hard drill: playing dead, VIPs left unannounced and proxy listeners closed")
}

// reviveIfDue comes back from a hard drill once its silence is over, as a
// restarted process: listeners bound again, then VIPs checked as at
// start. A listener that cannot be bound yet is retried at each round;
// its frontend counts as not listening meanwhile, which keeps the node
// from claiming a VIP.
func (c *controller) reviveIfDue(now time.Time) {
	c.mu.Lock()
	d := c.dead
	due := d.dead && !now.Before(c.facts.drill.SilencedUntil)
	c.mu.Unlock()
	if !due {
		return
	}
	err := c.srv.playDead(false)
	if !d.thawed {
		for _, a := range c.announcers {
			a.a.PlayDead(false)
		}
	}
	c.mu.Lock()
	if err == nil {
		c.dead = deadness{}
	} else {
		c.dead.thawed, c.dead.reopenErr = true, err.Error()
	}
	c.mu.Unlock()
	switch {
	case err == nil:
		c.log.Info("hard drill over: proxy listeners open again, VIPs checked as by a restarted process")
	case err.Error() != d.reopenErr:
		c.log.Error("hard drill over but a proxy listener cannot be opened again; retrying", "err", err)
	}
}
