package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxChunk bounds one splice: it is the size Go gives its splice pipes.
const maxChunk = 1 << 20

// copyEnd says how one direction of a session stopped.
type copyEnd int

const (
	endEOF    copyEnd = iota // the source sent FIN
	endIdle                  // no bytes from the source for the idle timeout
	endFailed                // read or write error, or a closed socket
)

// pump copies one direction of a session, from src to dst, until src
// sends EOF, stays idle for idle (0: no timeout), or an error happens.
// add is called with every chunk moved.
type pump struct {
	dst, src net.Conn
	idle     time.Duration
	add      func(int64)
	bufs     *sync.Pool // *[]byte of copyBufSize, for the non-TCP fallback

	last time.Time // when bytes last came from src
}

// copyBufSize is the fallback copy buffer, as io.Copy uses.
const copyBufSize = 32 << 10

// run copies until the direction ends and says how.
func (p *pump) run() (copyEnd, error) {
	p.last = time.Now()
	if p.idle > 0 {
		if err := p.src.SetReadDeadline(p.last.Add(p.idle)); err != nil {
			return endFailed, fmt.Errorf("set read deadline: %w", err)
		}
	}
	dst, dok := p.dst.(*net.TCPConn)
	src, sok := p.src.(*net.TCPConn)
	if dok && sok {
		return p.splice(dst, src)
	}
	return p.buffered()
}

// stillIdle is called when src's read deadline fired. The deadline is set
// once per idle period instead of on every read (cheap on busy
// connections), so it can fire early; then it is re-armed from the last
// activity and copying goes on.
func (p *pump) stillIdle() (bool, error) {
	if time.Since(p.last) >= p.idle {
		return true, nil
	}
	if err := p.src.SetReadDeadline(p.last.Add(p.idle)); err != nil {
		return false, fmt.Errorf("set read deadline: %w", err)
	}
	return false, nil
}

// splice moves bytes with the kernel's splice(2) while they flow, without
// holding a pipe between bursts. io.Copy between two *net.TCPConn would
// splice too, but it keeps its pipe (two fds) for the whole call — the
// life of the connection — even while idle. Here each round first waits
// for src to become readable with no pipe (a MSG_PEEK on the poller),
// asks the kernel how many bytes are queued (SIOCINQ), and splices exactly
// that many: the splice never waits for input, so its pooled pipe goes
// back as soon as the burst is written.
func (p *pump) splice(dst, src *net.TCPConn) (copyEnd, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return endFailed, fmt.Errorf("raw source conn: %w", err)
	}
	var (
		peek  [1]byte
		avail int
		eof   bool
		rerr  error
	)
	// ready runs on the poller's behalf: false parks the goroutine until
	// the socket is readable (or its deadline passes).
	ready := func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			case err != nil:
				rerr = err
				return true
			case n == 0:
				eof = true
				return true
			}
			q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if err != nil || q < n {
				q = n
			}
			avail = q
			return true
		}
	}
	lr := io.LimitedReader{R: src}
	for {
		avail, eof, rerr = 0, false, nil
		if err := rc.Read(ready); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				idle, err := p.stillIdle()
				if err != nil {
					return endFailed, err
				}
				if idle {
					return endIdle, nil
				}
				continue
			}
			return endFailed, fmt.Errorf("wait for data: %w", err)
		}
		if rerr != nil {
			return endFailed, fmt.Errorf("read: %w", rerr)
		}
		if eof {
			return endEOF, nil
		}
		lr.N = int64(min(avail, maxChunk))
		n, err := dst.ReadFrom(&lr)
		if n > 0 {
			p.last = time.Now()
			p.add(n)
		}
		switch {
		case err == nil && n == 0:
			// splice reports end of input with 0 bytes.
			return endEOF, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// src's deadline passed while dst was slow to take the
			// previous burst; the next round re-checks idleness.
		case err != nil:
			return endFailed, fmt.Errorf("splice: %w", err)
		}
	}
}

// buffered is the fallback for connections splice cannot serve (not
// *net.TCPConn, e.g. from a test dialer): a plain copy through a pooled
// buffer.
func (p *pump) buffered() (copyEnd, error) {
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := p.src.Read(buf)
		if n > 0 {
			p.last = time.Now()
			w, werr := p.dst.Write(buf[:n])
			if w > 0 {
				p.add(int64(w))
			}
			if werr != nil {
				return endFailed, fmt.Errorf("write: %w", werr)
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return endEOF, nil
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			idle, err := p.stillIdle()
			if err != nil {
				return endFailed, err
			}
			if idle {
				return endIdle, nil
			}
		default:
			return endFailed, fmt.Errorf("read: %w", rerr)
		}
	}
}

// closeWrite half-closes c so its peer reads EOF while the other
// direction keeps flowing; connections without half-close are closed.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
