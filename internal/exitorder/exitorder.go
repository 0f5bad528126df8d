package exitorder

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reserve is how many descriptors at the top of the table are kept for
// pins: the gossip sockets, the frontends' listeners and one watch per
// peer, with room to spare.
const reserve = 512

// listenerSlots is the part of the reserve at the very top, for Listener
// pins: the gossip sockets and every frontend's listener.
const listenerSlots = 64

// Band says where in the reserve a pin goes; a higher band is released
// first.
type Band int

const (
	// Connections are released after Listeners and before every
	// descriptor below the reserve.
	Connections Band = iota
	// Listeners are released first of all: a peer that reads the end of
	// a pinned connection and probes the port at once must find it
	// closed (refused), not still accepting.
	Listeners
)

// tableCap bounds where pins go, so that a huge open-file limit (systemd
// allows up to 2^20) does not make the kernel allocate a descriptor table
// that large: 2^16 entries cost 512 KiB. A process with more descriptors
// open than that releases some of them before its pins.
const tableCap = 1 << 16

// top is the number no pin reaches for an open-file limit of limit.
func top(limit uint64) int { return int(min(limit, tableCap)) }

// base returns the lowest descriptor number a pin of band b may take for
// an open-file limit of limit.
func base(limit uint64, b Band) int {
	t := top(limit)
	if b == Listeners {
		return max(t-listenerSlots, t*15/16)
	}
	return max(t-reserve, t/2)
}

// fileLimit is this process's open-file limit, read once (Go raises the
// soft limit to the hard one at start).
var fileLimit = sync.OnceValue(func() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return rl.Cur
})

// Pin is a duplicate of a socket's descriptor at the top of the table.
// While it is open the socket stays open: close it together with the
// socket (Conn and Listener do).
type Pin struct {
	fd   int
	once sync.Once
}

// New pins the socket of c in band b. It fails when the table has no
// room at the top (a small open-file limit, or the reserve in use); the
// socket then works as before, only released in its turn.
func New(c syscall.Conn, b Band) (*Pin, error) {
	from := base(fileLimit(), b)
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("pin a socket for release first at exit: %w", err)
	}
	fd, derr := -1, error(nil)
	err = rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, from)
	})
	if err == nil {
		err = derr
	}
	if err == nil && fd >= top(fileLimit()) {
		// The band is full and the limit is above tableCap: the kernel
		// would grow the table past the cap for this one.
		_ = unix.Close(fd)
		err = unix.EMFILE
	}
	if err != nil {
		return nil, fmt.Errorf("pin a socket for release first at exit (descriptor %d or above): %w",
			from, os.NewSyscallError("fcntl", err))
	}
	return &Pin{fd: fd}, nil
}

// FD is the pin's descriptor number.
func (p *Pin) FD() int { return p.fd }

// Close closes the duplicate; further calls do nothing.
func (p *Pin) Close() error {
	var err error
	p.once.Do(func() { err = unix.Close(p.fd) })
	return err
}

// Conn is a connection whose socket is pinned: Close closes the pin
// first, so the socket really closes (FIN) with the connection.
type Conn struct {
	net.Conn
	pin *Pin
}

// PinConn pins c's socket in the Connections band if it can and returns
// c wrapped so that closing it closes the pin; when pinning fails it
// returns c as it is, with the error.
func PinConn(c net.Conn) (net.Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, fmt.Errorf("pin a %T: not a socket", c)
	}
	p, err := New(sc, Connections)
	if err != nil {
		return c, err
	}
	return &Conn{Conn: c, pin: p}, nil
}

// SyscallConn is the connection's own, for socket options.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no raw connection", c.Conn)
	}
	return sc.SyscallConn()
}

// Close closes the pin, then the connection.
func (c *Conn) Close() error {
	_ = c.pin.Close()
	return c.Conn.Close()
}

// Listener is a TCP listener whose socket is pinned in the Listeners band:
// Close closes the pin first, so the port really closes (refuses) with it.
type Listener struct {
	*net.TCPListener
	pin *Pin
}

// PinListener pins ln's socket in the Listeners band if it can and returns
// ln wrapped so that closing it closes the pin; when pinning fails it
// returns ln as it is, with the error.
func PinListener(ln net.Listener) (net.Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln, fmt.Errorf("pin a %T: not a TCP listener", ln)
	}
	p, err := New(tl, Listeners)
	if err != nil {
		return ln, err
	}
	return &Listener{TCPListener: tl, pin: p}, nil
}

// Close closes the pin, then the listener.
func (l *Listener) Close() error {
	_ = l.pin.Close()
	return l.TCPListener.Close()
}
