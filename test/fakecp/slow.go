package fakecp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// defaultBacklog is the accept queue a listener gets back when slow
// accepting ends; the kernel caps it at net.core.somaxconn, as Go's own
// listen does.
const defaultBacklog = 4096

// slowAccept is how slow the server accepts: a pause after each accept and
// the length of each listener's accept queue (0: the default).
type slowAccept struct {
	delay   time.Duration
	backlog int
}

// apply sets ln's accept queue length. Linux takes a listen(2) on a
// listening socket as a new backlog, so no re-bind is needed.
func (a slowAccept) apply(ln net.Listener) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	backlog := a.backlog
	if backlog <= 0 {
		backlog = defaultBacklog
	}
	_ = rc.Control(func(fd uintptr) { _ = syscall.Listen(int(fd), backlog) })
}

// SetSlowAccept makes the server slow to accept, like an API server whose
// accept loop falls behind in a reconnect storm: every accept is followed
// by a pause of delay, and each listener queues at most backlog connections
// that are not accepted yet; the kernel drops SYNs beyond that, and their
// connects time out unless retried. Zero values make it fast again.
func (s *Server) SetSlowAccept(delay time.Duration, backlog int) error {
	if delay < 0 || backlog < 0 {
		return fmt.Errorf("slow accept: delay %s and backlog %d must not be negative", delay, backlog)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slow = slowAccept{delay: delay, backlog: backlog}
	if s.gen != nil {
		for _, ln := range s.gen.listeners {
			s.slow.apply(ln)
		}
	}
	s.log.Info("accept speed changed", "delay", delay, "backlog", backlog)
	return nil
}

func (s *Server) handleSlowAccept(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var delay time.Duration
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("delay %q: want a duration like 5ms", v), http.StatusBadRequest)
			return
		}
		delay = d
	}
	backlog := 0
	if v := q.Get("backlog"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("backlog %q: want a number of connections", v), http.StatusBadRequest)
			return
		}
		backlog = n
	}
	if err := s.SetSlowAccept(delay, backlog); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

// SlowAccept makes the server slow to accept (see Server.SetSlowAccept);
// zero values make it fast again.
func (c *Client) SlowAccept(ctx context.Context, delay time.Duration, backlog int) error {
	q := url.Values{"delay": {delay.String()}, "backlog": {strconv.Itoa(backlog)}}
	return c.post(ctx, "/slow-accept?"+q.Encode())
}
