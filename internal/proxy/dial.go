package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"halb/internal/config"
)

// deadlineCtx is a parent context with a deadline of its own, without a
// timer: Go's connect waits for the socket with the poller's write
// deadline, and finds the parent's cancel hook through it. A dial thus
// costs no context.WithTimeout (a timer and its cancel) and no goroutine.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

// Deadline reports the dial's deadline; none when it is zero.
func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// dial connects to addr within timeout (<= 0: the kernel's SYN retries
// bound it) or until the drain grace is over. A test's Dialer is called
// as before; the default one is net's own non-blocking connect.
func (f *Frontend) dial(addr netip.AddrPort, to *config.Timeouts) (net.Conn, error) {
	if f.opts.Dialer != nil {
		ctx, cancel := dialContext(f.force, to.Connect)
		defer cancel()
		return f.opts.Dialer.DialContext(ctx, "tcp", addr.String())
	}
	ctx := &deadlineCtx{Context: f.force}
	if to.Connect > 0 {
		ctx.deadline = time.Now().Add(to.Connect)
	}
	d := &f.plainDialer
	if to.KeepAlive > 0 {
		d = &net.Dialer{KeepAliveConfig: keepAliveConfig(to.KeepAlive)}
	}
	return d.DialContext(ctx, "tcp", addr.String())
}

// keepAliveConfig probes after period of silence and then every period;
// the kernel's probe count stays.
func keepAliveConfig(period time.Duration) net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: -1}
}

// setKeepAlive turns keep-alive on for an accepted client connection when
// the config asks for it; the listener accepts without.
func setKeepAlive(c net.Conn, period time.Duration) error {
	tc, ok := c.(*net.TCPConn)
	if period <= 0 || !ok {
		return nil
	}
	if err := tc.SetKeepAliveConfig(keepAliveConfig(period)); err != nil {
		return fmt.Errorf("set keep-alive on the client connection: %w", err)
	}
	return nil
}
