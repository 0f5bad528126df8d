package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxChunk bounds one splice: the size asked for the pipes, as Go's own
// splice pipes are.
const maxChunk = 1 << 20

// copyEnd says how one direction of a session stopped.
type copyEnd int

const (
	endEOF    copyEnd = iota // the source sent FIN
	endIdle                  // no bytes from the source for the idle timeout
	endFailed                // read or write error, or a closed socket
	endParked                // cold: parked with the parker, resumed later
)

// hotPeriod is how long, by default, a quiet direction keeps its goroutine waiting in
// Go's poller before it parks cold: long enough that request/response
// traffic never parks between messages, short enough that idle sessions
// cost no goroutine stack.
const hotPeriod = time.Second

// pump copies one direction of a session, from src to dst, until src
// sends EOF, stays idle for idle (0: no timeout), or an error happens.
// add is called with every chunk moved.
type pump struct {
	s        *session
	dir      int // dirUp or dirDown
	dst, src net.Conn
	idle     time.Duration
	total    int64         // bytes passed on
	bufs     *sync.Pool    // *[]byte of copyBufSize
	pipes    *pipePool     // splice pipes for bulk bursts; nil: copy only
	parker   *parker       // parks the direction when cold; nil: never parks
	hot      time.Duration // quiet time before parking

	last time.Time // when bytes last came from src
	woke time.Time // when the direction last resumed from parking

	// State of the raw read and write callbacks, made once per pump so
	// the hot path allocates nothing.
	buf        *[]byte
	n          int
	sent       int // bytes of buf already written on
	again      bool
	rerr, werr error
	pipe       *pipe
	left       int
	// readFn and writeFn are the callbacks handed to the raw conns,
	// bound once per direction; pulling and pushing say which of
	// their two jobs they do.
	readFn, writeFn  func(uintptr) bool
	pulling, pushing bool
	draining         bool   // the copy loop writes the rest of buf
	resumeFn         func() // p.resume, bound at the first parking
	// inq reads src once it has carried inqAfter messages: then a
	// message is passed on inside the read callback (see tryRead).
	inq    *inqReader
	msgs   int
	noINQ  bool // the kernel has no TCP_INQ
	rc, wc syscall.RawConn

	noPark   bool          // this direction does not park (not TCP, or parking failed)
	added    atomic.Bool   // src is in the parker's epoll set
	parkedID atomic.Uint64 // the parking id while parked, else 0
}

// init sets up the direction of s from src to dst.
func (p *pump) init(s *session, dir int, dst, src net.Conn, idle time.Duration) {
	f := s.f
	*p = pump{s: s, dir: dir, dst: dst, src: src, idle: idle,
		bufs: &f.bufs, pipes: f.pipes, parker: f.parker, hot: f.hot}
}

// add counts bytes passed on.
func (p *pump) add(b int64) {
	p.total += b
	p.s.moved(p.dir, b)
}

// done ends the direction, in whichever goroutine runs it then (parking
// hands it over).
func (p *pump) done(e copyEnd, err error) { p.s.directionDone(p.dir, e, err) }

// start runs the direction until it ends, then calls done; a direction
// that parks returns at once and is finished by the goroutine that
// resumes it.
func (p *pump) start() {
	end, err := p.run()
	if end != endParked {
		p.done(end, err)
	}
}

// resume continues a parked direction in the calling goroutine.
func (p *pump) resume() {
	p.parkedID.Store(0)
	p.woke = time.Now()
	if err := p.armDeadline(); err != nil {
		p.done(endFailed, err)
		return
	}
	end, err := p.loop()
	if end != endParked {
		p.done(end, err)
	}
}

// wake resumes a parked direction so it notices its closed socket.
func (p *pump) wake() {
	if p.parker == nil {
		return
	}
	if id := p.parkedID.Load(); id != 0 {
		if resume := p.parker.take(id); resume != nil {
			go resume()
		}
	}
}

// hotSince is when the direction last had reason to stay awake: bytes,
// or a wake-up from parking (which may find bytes or a closed socket).
func (p *pump) hotSince() time.Time {
	if p.woke.After(p.last) {
		return p.woke
	}
	return p.last
}

// armDeadline sets src's read deadline to the next moment the direction
// must look at the clock: the idle timeout, or going cold.
func (p *pump) armDeadline() error {
	var next time.Time
	if p.idle > 0 {
		next = p.last.Add(p.idle)
	}
	if p.parker != nil && !p.noPark {
		if hot := p.hotSince().Add(p.hot); next.IsZero() || hot.Before(next) {
			next = hot
		}
	}
	if next.IsZero() {
		return nil
	}
	if err := p.src.SetReadDeadline(next); err != nil {
		return fmt.Errorf("set read deadline: %w", err)
	}
	return nil
}

// copyBufSize is the copy buffer, as io.Copy uses. A read that fills it
// means a bulk burst: the rest of the burst is spliced.
const copyBufSize = 32 << 10

// run copies until the direction ends and says how.
func (p *pump) run() (copyEnd, error) {
	p.last = time.Now()
	if _, ok := p.src.(*net.TCPConn); !ok {
		p.noPark = true
	}
	if err := p.armDeadline(); err != nil {
		return endFailed, err
	}
	dst, dok := p.dst.(*net.TCPConn)
	src, sok := p.src.(*net.TCPConn)
	if dok && sok {
		return p.raw(dst, src)
	}
	p.noPark = true
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

// raw moves bytes between two TCP sockets without holding anything while
// the source is quiet. io.Copy between two *net.TCPConn would splice, but
// it keeps its pipe (two fds) for the whole call — the life of the
// connection — even while idle. Here the wait for data holds no buffer
// and no pipe: the read is tried in the poller's callback, with a pooled
// buffer taken only for that try. Small reads (requests, replies) are
// written on from the buffer: two syscalls a message. A read that fills
// the buffer starts a bulk burst, spliced through a pooled pipe until the
// source has nothing more queued; then the pipe goes back.
func (p *pump) raw(dst, src *net.TCPConn) (copyEnd, error) {
	// The session usually shares both raw conns between its directions.
	if p.rc == nil {
		rc, err := src.SyscallConn()
		if err != nil {
			return endFailed, fmt.Errorf("raw source conn: %w", err)
		}
		p.rc = rc
	}
	if p.wc == nil {
		wc, err := dst.SyscallConn()
		if err != nil {
			return endFailed, fmt.Errorf("raw destination conn: %w", err)
		}
		p.wc = wc
	}
	p.readFn, p.writeFn = p.onReadable, p.onWritable
	return p.loop()
}

// loop is raw's copy loop; a parked direction re-enters it on resume.
func (p *pump) loop() (copyEnd, error) {
	for {
		p.buf, p.n, p.sent, p.rerr, p.werr = nil, 0, 0, nil, nil
		if err := p.rc.Read(p.readFn); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return endFailed, fmt.Errorf("wait for data: %w", err)
			}
			if p.idle > 0 && time.Since(p.last) >= p.idle {
				return endIdle, nil
			}
			if p.parker != nil && !p.noPark && time.Since(p.hotSince()) >= p.hot {
				if p.park() {
					return endParked, nil
				}
				p.noPark = true // wait in Go's poller from now on
			}
			if err := p.armDeadline(); err != nil {
				return endFailed, err
			}
			continue
		}
		if p.rerr != nil {
			return endFailed, fmt.Errorf("read: %w", os.NewSyscallError("read", p.rerr))
		}
		if p.werr != nil {
			p.bufs.Put(p.buf)
			return endFailed, fmt.Errorf("write: %w", p.werr)
		}
		if p.n == 0 {
			p.bufs.Put(p.buf)
			return endEOF, nil
		}
		full := p.n == len(*p.buf)
		// What the callback could not send at once (dst full) is
		// written here, where waiting for dst holds no lock on src.
		sent := p.sent
		p.draining = true
		werr := p.wc.Write(p.writeFn)
		p.draining = false
		if werr == nil {
			werr = p.werr
		}
		p.bufs.Put(p.buf)
		if w := p.sent - sent; w > 0 {
			p.add(int64(w))
		}
		if werr != nil {
			return endFailed, fmt.Errorf("write: %w", werr)
		}
		if full && p.pipes != nil {
			if end, err, stop := p.burst(p.rc, p.wc); stop {
				return end, err
			}
		}
	}
}

// park hands the quiet direction to the parker: its goroutine ends, and
// readiness, the idle timeout or a close resumes it in a new one. False
// if it could not park; then the caller goes on waiting itself.
func (p *pump) park() bool {
	// Go's poller is not waited on while parked; a deadline left there
	// would only fire into nothing. resume sets it again.
	if err := p.src.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	var timeout time.Duration
	if p.idle > 0 {
		timeout = max(p.idle-time.Since(p.last), time.Millisecond)
	}
	if p.resumeFn == nil {
		p.resumeFn = p.resume
	}
	return p.parker.park(p.rc, &p.added, &p.parkedID, p.resumeFn, timeout)
}

// onReadable is the callback for src: a read, or a pull into the pipe
// during a burst.
func (p *pump) onReadable(fd uintptr) bool {
	if p.pulling {
		return p.tryPull(fd)
	}
	return p.tryRead(fd)
}

// onWritable is the callback for dst: a push from the pipe during a
// burst, or sending a message on.
func (p *pump) onWritable(fd uintptr) bool {
	switch {
	case p.pushing:
		return p.tryPush(fd)
	case p.draining:
		return p.send(fd, true)
	}
	return p.send(fd, false)
}

// inqAfter is how many messages a direction carries before it reads
// with the TCP_INQ hint: a setsockopt that one-shot connections need not
// pay for.
const inqAfter = 2

// tryRead reads what src has queued into a pooled buffer; false (wait)
// when there is nothing, with the buffer given back.
//
// Once the direction reads with the TCP_INQ hint, a message (a read that
// neither fills the buffer nor is EOF) is written on to dst right here,
// and when the kernel says nothing is left behind it, tryRead asks to
// wait without reading again. Waiting inside the same raw Read keeps Go's
// poller's readiness from the moment of this read — a fresh Read would
// reset it and could miss bytes that arrived meanwhile — and the hint
// counts a queued FIN, so neither bytes nor EOF are missed. The write is
// one non-blocking try: whatever does not fit is left to the copy loop,
// so this callback never blocks while it holds src.
func (p *pump) tryRead(fd uintptr) bool {
	for {
		b := p.bufs.Get().(*[]byte)
		var n int
		var err error
		more := true
		if p.inq != nil {
			n, more, err = p.inq.read(int(fd), *b)
		} else {
			n, err = rawRead(int(fd), *b)
		}
		switch {
		case errors.Is(err, unix.EINTR):
			p.bufs.Put(b)
			continue
		case errors.Is(err, unix.EAGAIN):
			p.bufs.Put(b)
			return false
		case err != nil:
			p.bufs.Put(b)
			p.rerr = err
			return true
		}
		if n > 0 {
			p.last = time.Now()
		}
		p.buf, p.n, p.sent = b, n, 0
		if n == 0 || n == len(*b) {
			return true // EOF, or a bulk burst for the copy loop
		}
		if p.inq == nil {
			p.countMessage(fd)
			return true // the copy loop writes it on
		}
		if err := p.wc.Write(p.writeFn); err != nil {
			p.werr = err
		}
		if p.sent > 0 {
			p.add(int64(p.sent))
		}
		if p.werr != nil || p.sent < n {
			return true
		}
		p.buf, p.n = nil, 0
		p.bufs.Put(b)
		if !more {
			return false
		}
	}
}

// countMessage switches the direction to reading with the TCP_INQ hint
// after inqAfter messages.
func (p *pump) countMessage(fd uintptr) {
	if p.noINQ {
		return
	}
	if p.msgs++; p.msgs < inqAfter {
		return
	}
	if !enableINQ(int(fd)) {
		p.noINQ = true
		return
	}
	p.inq = &inqReader{}
}

// send writes buf on to dst without waiting in Go's poller: one try, or
// with all, until all of it is written or dst is full (then false:
// wait for dst).
func (p *pump) send(fd uintptr, all bool) bool {
	for {
		n, err := rawWrite(int(fd), (*p.buf)[p.sent:p.n])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return !all
		case err != nil:
			p.werr = os.NewSyscallError("write", err)
			return true
		}
		p.sent += n
		if !all || p.sent == p.n {
			return true
		}
	}
}

// burst splices from src to dst while src has bytes queued. stop is true
// when the direction ended (EOF, error, idle timeout).
func (p *pump) burst(rc, wc syscall.RawConn) (copyEnd, error, bool) {
	pp, err := p.pipes.get()
	if err != nil {
		return 0, nil, false // no pipe to be had: go on copying
	}
	p.pipe = pp
	clean := false
	defer func() { p.pipes.put(pp, clean); p.pipe = nil }()
	for {
		p.n, p.again, p.rerr = 0, false, nil
		p.pulling = true
		err := rc.Read(p.readFn)
		p.pulling = false
		if err != nil {
			clean = true
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, nil, false // the copy loop looks at the clock
			}
			return endFailed, fmt.Errorf("wait for data: %w", err), true
		}
		switch {
		case p.again:
			// Nothing more queued: the burst is over and the pipe,
			// empty, goes back before the next wait.
			clean = true
			return 0, nil, false
		case p.rerr != nil:
			return endFailed, fmt.Errorf("splice: %w", os.NewSyscallError("splice", p.rerr)), true
		case p.n == 0:
			clean = true
			return endEOF, nil, true
		}
		p.last = time.Now()
		moved := p.n
		p.left, p.werr = moved, nil
		for p.left > 0 {
			p.pushing = true
			err := wc.Write(p.writeFn)
			p.pushing = false
			if err != nil {
				return endFailed, fmt.Errorf("write: %w", err), true
			}
			if p.werr != nil {
				return endFailed, fmt.Errorf("splice: %w", os.NewSyscallError("splice", p.werr)), true
			}
		}
		p.add(int64(moved))
	}
}

// tryPull splices what src has queued into the pipe; again when nothing is.
func (p *pump) tryPull(fd uintptr) bool {
	for {
		n, err := rawSplice(int(fd), p.pipe.w, maxChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			p.again = true
		case err != nil:
			p.rerr = err
		default:
			p.n = int(n)
		}
		return true
	}
}

// tryPush splices from the pipe to dst; false (wait) while dst is full.
func (p *pump) tryPush(fd uintptr) bool {
	for {
		n, err := rawSplice(p.pipe.r, int(fd), p.left, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil:
			p.werr = err
		default:
			p.left -= int(n)
		}
		return true
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
// With rc, c's raw conn, the shutdown is a raw system call (see raw.go):
// sending the FIN runs the peer's receive path inline.
func closeWrite(c net.Conn, rc syscall.RawConn) error {
	if rc != nil {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = rawShutdownWrite(int(fd)) }); err != nil {
			return err
		}
		if serr != nil {
			return os.NewSyscallError("shutdown", serr)
		}
		return nil
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
