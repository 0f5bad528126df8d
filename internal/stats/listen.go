package stats

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// maxConns caps the connections one stats listener holds open at once.
// A dashboard uses one or two and a scraper one; the cap keeps clients
// inside stats.allow from taking the file descriptors the proxy needs.
const maxConns = 64

// gatedListener refuses connections at accept, before any byte of a
// request is read: those from sources admit rejects, and those beyond max
// held open. Checking only once the request was read let every outsider
// hold a descriptor for the whole header timeout, and enough of them ran
// the process out of descriptors, failing the proxy's accepts and health
// checks.
type gatedListener struct {
	net.Listener
	admit func(netip.Addr) bool // nil admits every source
	open  chan struct{}         // one token per connection held open
	log   *slog.Logger
}

func newGatedListener(ln net.Listener, admit func(netip.Addr) bool, max int, log *slog.Logger) *gatedListener {
	return &gatedListener{Listener: ln, admit: admit, open: make(chan struct{}, max), log: log}
}

// Accept returns the next connection it admits. It loops only over the
// ones it closes, and ends when the listener does.
func (l *gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// As in guard: the zone says nothing about who the client is.
		src := addrPort(c.RemoteAddr()).Addr().Unmap().WithZone("")
		if l.admit != nil && !l.admit(src) {
			l.refuse(c, src, "source outside stats.allow")
			continue
		}
		select {
		case l.open <- struct{}{}:
			return &heldConn{Conn: c, release: func() { <-l.open }}, nil
		default:
			l.refuse(c, src, "too many connections")
		}
	}
}

// refuse closes c unread. Debug level: a flood of refusals must not
// become a flood of log lines.
func (l *gatedListener) refuse(c net.Conn, src netip.Addr, why string) {
	_ = c.Close() // nothing was read or written: nothing to lose
	l.log.Debug("stats connection refused", "client", src.String(), "reason", why)
}

// heldConn gives its listener slot back when closed, once.
type heldConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *heldConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// CloseWrite lets net/http half-close before closing, as it does on a
// bare *net.TCPConn, so a client is not reset before it read an error.
func (c *heldConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
