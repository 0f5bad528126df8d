package proxy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parker watches the sockets of cold sessions — idle past a short while —
// in an epoll set of its own, so that such a session holds no goroutine
// (and no goroutine stack) until bytes, EOF, an error, a timeout or a
// close resume it in a fresh goroutine. A parked socket stays registered
// with Go's poller too; only this set is waited on while it is cold.
type parker struct {
	epfd, wake int

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]parked
	stopped bool
	done    chan struct{}
}

// newParker makes the epoll set; run waits on it.
func newParker() (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("make epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("make eventfd: %w", err)
	}
	// Id 0 is the wake-up eventfd; parked sockets count from 1.
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("watch eventfd: %w", err)
	}
	return &parker{epfd: epfd, wake: wake, waiting: map[uint64]parked{}, done: make(chan struct{})}, nil
}

// parked is one parked direction.
type parked struct {
	resume func()
	timer  *time.Timer // the idle timeout, or nil
}

// run waits for parked sockets to become ready and resumes each in a
// goroutine, until stop. It holds one OS thread in epoll_wait.
func (pk *parker) run() {
	defer close(pk.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(pk.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Cannot happen with a valid set; resume everyone so no
			// session is stranded, and stop parking.
			pk.shut()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				pk.shut()
				return
			}
			if resume := pk.take(id); resume != nil {
				go resume()
			}
		}
	}
}

// shut stops parking and resumes whatever is parked.
func (pk *parker) shut() {
	pk.mu.Lock()
	pk.stopped = true
	left := pk.waiting
	pk.waiting = map[uint64]parked{}
	pk.mu.Unlock()
	for _, w := range left {
		if w.timer != nil {
			w.timer.Stop()
		}
		go w.resume()
	}
}

// stop ends run and closes the epoll set. Call it once no session is left.
func (pk *parker) stop() {
	var one = [8]byte{1}
	_, _ = unix.Write(pk.wake, one[:])
	<-pk.done
	_ = unix.Close(pk.epfd)
	_ = unix.Close(pk.wake)
}

// park registers rc's socket, one-shot, to call resume once it is
// readable, hung up or in error, or once timeout passes (0: never). The
// parking id is stored in id before the socket is watched, so a close
// right after can find it (see pump.wake). It returns false when the
// socket could not be parked (closed, or the parker is stopping): then
// the caller goes on itself.
func (pk *parker) park(rc syscall.RawConn, added *atomic.Bool, id *atomic.Uint64, resume func(), timeout time.Duration) bool {
	pk.mu.Lock()
	if pk.stopped {
		pk.mu.Unlock()
		return false
	}
	pk.next++
	n := pk.next
	w := parked{resume: resume}
	if timeout > 0 {
		w.timer = time.AfterFunc(timeout, func() {
			if r := pk.take(n); r != nil {
				r()
			}
		})
	}
	pk.waiting[n] = w
	id.Store(n)
	pk.mu.Unlock()
	var cerr error
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(n)), Pad: int32(uint32(n >> 32))}
		op := unix.EPOLL_CTL_MOD
		if !added.Load() {
			op = unix.EPOLL_CTL_ADD
		}
		if cerr = unix.EpollCtl(pk.epfd, op, int(fd), &ev); cerr == nil {
			added.Store(true)
		}
	})
	if err != nil || cerr != nil {
		// Whoever takes the id owns the continuation: if a close
		// already woke it, the woken goroutine goes on, not us.
		if pk.take(n) == nil {
			return true
		}
		id.Store(0)
		return false
	}
	return true
}

// take removes a parked entry, stops its timer and returns its resume
// function, or nil if another event (readiness, timeout, close) took it
// first.
func (pk *parker) take(id uint64) func() {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	w, ok := pk.waiting[id]
	if !ok {
		return nil
	}
	delete(pk.waiting, id)
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.resume
}

// count is the number of parked directions.
func (pk *parker) count() int {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	return len(pk.waiting)
}
