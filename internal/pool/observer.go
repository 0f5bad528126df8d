package pool

// Transition is a server's health changing, as reported to an observer.
type Transition struct {
	Backend string
	Server  string
	Address string
	Up      bool
	Reason  string
}

// SetObserver has f called after each of the pool's servers changes
// between up and down (by checks or passive health). f runs on the
// caller's goroutine, a health runner or the proxy's dial path, so it
// must not block; nil removes it.
func (p *Pool) SetObserver(f func(Transition)) {
	if f == nil {
		p.observer.Store(nil)
		return
	}
	p.observer.Store(&f)
}

// observe reports a transition of s to the observer, if any.
func (s *Server) observe(up bool, reason string) {
	if f := s.pool.observer.Load(); f != nil {
		(*f)(Transition{Backend: s.pool.name, Server: s.name, Address: s.addr.String(), Up: up, Reason: reason})
	}
}
