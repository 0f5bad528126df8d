package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"halb/internal/freebind"
)

// Listen opens a frontend's listener on bind with IP_FREEBIND, so that an
// address this node does not hold yet (a VIP) can be bound. With more than
// one CPU it is a set of SO_REUSEPORT sockets, one per CPU, each accepted
// from by a loop of its own, so the kernel spreads new connections over
// accept queues that do not share a lock.
func Listen(ctx context.Context, bind netip.AddrPort) (net.Listener, error) {
	return listenSockets(ctx, bind, runtime.GOMAXPROCS(0))
}

// listenSockets is Listen with n sockets; n <= 1 is one plain socket.
func listenSockets(ctx context.Context, bind netip.AddrPort, n int) (net.Listener, error) {
	network := "tcp4"
	if bind.Addr().Is6() && !bind.Addr().Is4In6() {
		network = "tcp6"
	}
	if n <= 1 {
		ln, err := listenOne(ctx, network, bind, false)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", bind, err)
		}
		return ln, nil
	}
	// SO_REUSEPORT would let this set share the port with any other
	// socket of the same user that has it too (HAProxy sets it), and
	// split the traffic silently. A plain bind first fails as before if
	// anything holds the address, and picks the port for port 0.
	port, err := probeBind(network, bind)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", bind, err)
	}
	bind = netip.AddrPortFrom(bind.Addr(), port)
	rl := &reuseListener{conns: make(chan accepted), done: make(chan struct{}), changed: make(chan struct{})}
	for range n {
		ln, err := listenOne(ctx, network, bind, true)
		if err != nil {
			_ = rl.Close()
			return nil, fmt.Errorf("listen on %s: %w", bind, err)
		}
		rl.socks = append(rl.socks, ln)
	}
	return rl, nil
}

// listenOne opens one listening socket, with SO_REUSEPORT if reuse.
func listenOne(ctx context.Context, network string, bind netip.AddrPort, reuse bool) (*net.TCPListener, error) {
	// Accepted sockets get no keep-alive setsockopts (see
	// Frontend.plainDialer); a session turns it on if configured.
	lc := net.ListenConfig{Control: freebind.Control, KeepAlive: -1}
	if reuse {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			if err := freebind.Control(network, address, c); err != nil {
				return err
			}
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return fmt.Errorf("set SO_REUSEPORT: %w", err)
			}
			if serr != nil {
				return fmt.Errorf("set SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	ln, err := lc.Listen(ctx, network, bind.String())
	if err != nil {
		return nil, err //nolint:wrapcheck // the callers say where
	}
	return ln.(*net.TCPListener), nil
}

// probeBind binds (without listening) a plain socket to bind, as the
// listener would, and returns the port it got.
func probeBind(network string, bind netip.AddrPort) (uint16, error) {
	// net.ListenConfig would listen, and a SYN queued meanwhile would be
	// reset; a raw socket that is only bound takes no connection.
	family := unix.AF_INET
	if network == "tcp6" {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("probe socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	// As Go's listeners do: a port whose old connections linger in
	// TIME_WAIT can be bound.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return 0, fmt.Errorf("probe socket: set SO_REUSEADDR: %w", err)
	}
	level, opt := unix.SOL_IP, unix.IP_FREEBIND
	if family == unix.AF_INET6 {
		level, opt = unix.SOL_IPV6, unix.IPV6_FREEBIND
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return 0, fmt.Errorf("probe socket: set freebind: %w", err)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Port: int(bind.Port()), Addr: bind.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().Unmap().As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, os.NewSyscallError("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("probe socket: %w", os.NewSyscallError("getsockname", err))
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port), nil //nolint:gosec // a port fits
	case *unix.SockaddrInet6:
		return uint16(a.Port), nil //nolint:gosec // a port fits
	}
	return 0, errors.New("probe socket: unknown address family")
}

// accepted is one result of a socket's Accept.
type accepted struct {
	c   net.Conn
	err error
}

// reuseListener is a set of SO_REUSEPORT sockets on one address, used as
// one net.Listener: a goroutine per socket accepts and hands each
// connection to Accept. It can be handed over whole (SetDeadline stops
// Accept without closing, and connections taken from the kernel but not
// yet returned stay with it).
type reuseListener struct {
	socks []*net.TCPListener
	conns chan accepted
	start sync.Once
	wg    sync.WaitGroup

	closeOnce sync.Once
	done      chan struct{} // closed by Close

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed and replaced when the deadline changes
}

// Accept returns the next connection any socket accepted.
func (l *reuseListener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		for _, s := range l.socks {
			l.wg.Go(func() { l.acceptFrom(s) })
		}
	})
	for {
		l.mu.Lock()
		deadline, changed := l.deadline, l.changed
		l.mu.Unlock()
		if deadline.IsZero() {
			select {
			case a := <-l.conns:
				return a.c, a.err
			case <-l.done:
				return nil, l.opError(net.ErrClosed)
			case <-changed:
				continue
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, l.opError(os.ErrDeadlineExceeded)
		}
		t := time.NewTimer(left)
		select {
		case a := <-l.conns:
			t.Stop()
			return a.c, a.err
		case <-l.done:
			t.Stop()
			return nil, l.opError(net.ErrClosed)
		case <-changed:
			t.Stop()
		case <-t.C:
			return nil, l.opError(os.ErrDeadlineExceeded)
		}
	}
}

func (l *reuseListener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: l.socks[0].Addr().Network(), Addr: l.Addr(), Err: err}
}

// acceptFrom is one socket's accept loop. A failed accept goes to Accept
// like a connection: the caller's back-off paces this loop too, since it
// waits until Accept takes the error.
func (l *reuseListener) acceptFrom(s *net.TCPListener) {
	for {
		c, err := s.Accept()
		if err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case l.conns <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
	}
}

// Close closes every socket and waits for their accept loops to end.
func (l *reuseListener) Close() error {
	var errs []error
	l.closeOnce.Do(func() {
		close(l.done)
		for _, s := range l.socks {
			if err := s.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		l.wg.Wait()
	})
	return errors.Join(errs...)
}

// Addr is the address all the sockets share.
func (l *reuseListener) Addr() net.Addr { return l.socks[0].Addr() }

// SetDeadline sets the deadline of Accept; the sockets' own loops go on.
func (l *reuseListener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return l.opError(net.ErrClosed)
	default:
	}
	l.deadline = t
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}
