package netnsrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dialer opens TCP connections from a network namespace at the cost of
// a plain dial. Only socket(2) has to run inside the namespace: the
// Dialer switches a thread in and out for that one call, with both
// namespace handles opened once, and connects on any thread through Go's
// poller. Dialing inside Do instead parks a locked thread for the whole
// connect, so a burst of a thousand reconnections costs a thread hand-off
// each and the client, not the system under test, sets the pace.
type Dialer struct {
	ns         string
	orig, into netns.NsHandle
}

// NewDialer opens the namespace ns for dialing. It must be called from a
// goroutine in the process's own namespace (any goroutine not inside Do).
func NewDialer(ns string) (*Dialer, error) {
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("get own namespace: %w", err)
	}
	into, err := netns.GetFromName(ns)
	if err != nil {
		_ = orig.Close()
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	return &Dialer{ns: ns, orig: orig, into: into}, nil
}

// Close releases the namespace handles; connections stay open.
func (d *Dialer) Close() error {
	return errors.Join(d.orig.Close(), d.into.Close())
}

// socket makes a non-blocking TCP socket in the namespace.
func (d *Dialer) socket(family int) (int, error) {
	runtime.LockOSThread()
	if err := netns.Set(d.into); err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("enter namespace %s: %w", d.ns, err)
	}
	fd, serr := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	// A thread that cannot switch back stays locked: the runtime then
	// discards it rather than reuse it in the wrong namespace.
	if netns.Set(d.orig) == nil {
		runtime.UnlockOSThread()
	}
	if serr != nil {
		return -1, os.NewSyscallError("socket", serr)
	}
	return fd, nil
}

// DialContext connects to addr from the namespace; ctx bounds the
// connect.
func (d *Dialer) DialContext(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	ip := addr.Addr().Unmap()
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	}
	fd, err := d.socket(family)
	if err != nil {
		return nil, err
	}
	cerr := unix.Connect(fd, sa)
	if cerr != nil && !errors.Is(cerr, unix.EINPROGRESS) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("connect to %s from %s: %w", addr, d.ns, os.NewSyscallError("connect", cerr))
	}
	// The file joins the poller (the descriptor is non-blocking), so the
	// wait for the handshake parks the goroutine, not a thread.
	f := os.NewFile(uintptr(fd), "dial-"+addr.String())
	defer func() { _ = f.Close() }()
	if cerr != nil {
		if err := waitConnected(ctx, f); err != nil {
			return nil, fmt.Errorf("connect to %s from %s: %w", addr, d.ns, err)
		}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("connection to %s from %s: %w", addr, d.ns, err)
	}
	return c, nil
}

// waitConnected waits until the socket of f is writable, then reports
// the handshake's outcome from SO_ERROR.
func waitConnected(ctx context.Context, f *os.File) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		// Called first before any readiness, then on each wake-up: done
		// once the handshake failed or the socket has a peer.
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soErr = os.NewSyscallError("getsockopt", err)
		case v != 0:
			soErr = os.NewSyscallError("connect", unix.Errno(v))
		default:
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false // still connecting: wait for writability
			}
		}
		return true
	})
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			// Our deadline stands for ctx's (its own timer may not
			// have fired yet): report as a dial does.
			if err := ctx.Err(); err != nil {
				return err
			}
			return context.DeadlineExceeded
		}
		return werr
	}
	return soErr
}
