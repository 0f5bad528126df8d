package proxy

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe that carries one spliced burst at a time.
type pipe struct{ r, w int }

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("make splice pipe: %w", err)
	}
	// A bigger pipe moves a burst in fewer splices. Over the user's pipe
	// page budget the kernel refuses; the default size still works.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxChunk)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

func (p *pipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// pipePool keeps a few empty pipes between bursts. It is bounded, so the
// pipes a frontend holds while its connections are idle are a handful in
// all, not two fds per connection.
type pipePool struct {
	free chan *pipe
}

// pipePoolSize is how many idle pipes a frontend keeps.
const pipePoolSize = 8

func newPipePool(n int) *pipePool { return &pipePool{free: make(chan *pipe, n)} }

// get returns an empty pipe, from the pool or new.
func (pp *pipePool) get() (*pipe, error) {
	select {
	case p := <-pp.free:
		return p, nil
	default:
		return newPipe()
	}
}

// put gives a pipe back; one that may still hold bytes (clean false), or
// one the pool has no room for, is closed.
func (pp *pipePool) put(p *pipe, clean bool) {
	if !clean {
		p.close()
		return
	}
	select {
	case pp.free <- p:
	default:
		p.close()
	}
}

// close closes the pipes in the pool. It is called once no session is
// left to take or return one.
func (pp *pipePool) close() {
	for {
		select {
		case p := <-pp.free:
			p.close()
		default:
			return
		}
	}
}
