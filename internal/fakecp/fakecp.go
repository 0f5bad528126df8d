package fakecp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// State says how a fake control plane answers connections.
type State string

// States of a fake control plane.
const (
	// Serving answers HTTPS and TLS normally.
	Serving State = "serving"
	// Stopped closes every listener and connection, so connects are refused,
	// like a host whose API server process died.
	Stopped State = "stopped"
	// Blackhole keeps listening and accepting but never answers, like a
	// hung process: connects succeed, handshakes time out.
	Blackhole State = "blackhole"
)

// NameHeader is the response header naming the control plane that answered.
const NameHeader = "X-Fakecp"

// Options configure a fake control plane.
type Options struct {
	Name          string           // reported in every answer
	HTTPS         []netip.AddrPort // Kubernetes-API-like listeners (port 0 picks one)
	TLS           []netip.AddrPort // Talos-API-like listeners (port 0 picks one)
	ControlSocket string           // unix socket of the control API; "" for none
}

// Server is one fake control plane. Its zero value is not usable; call New.
type Server struct {
	opts Options
	log  *slog.Logger

	ready chan struct{}
	conf  *tls.Config
	hl    *chanListener // accepted HTTPS connections handed to the http.Server
	wg    sync.WaitGroup

	mu         sync.Mutex
	state      State
	failHealth bool
	https, tls []netip.AddrPort // resolved listen addresses, fixed after the first bind
	listeners  []net.Listener
	conns      map[*trackedConn]struct{}
	done       bool
}

// New returns a fake control plane; it does nothing until Run.
func New(opts Options, log *slog.Logger) *Server {
	return &Server{
		opts:  opts,
		log:   log.With("component", "fakecp", "server", opts.Name),
		ready: make(chan struct{}),
		hl:    &chanListener{conns: make(chan net.Conn), done: make(chan struct{})},
		state: Serving,
		https: append([]netip.AddrPort(nil), opts.HTTPS...),
		tls:   append([]netip.AddrPort(nil), opts.TLS...),
		conns: map[*trackedConn]struct{}{},
	}
}

// Ready is closed once every listener is bound.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the bound HTTPS and TLS addresses (ports resolved after Ready).
func (s *Server) Addrs() (https, tlsAddrs []netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.https...), append([]netip.AddrPort(nil), s.tls...)
}

// Run serves until ctx ends; it returns an error only when it cannot start.
func (s *Server) Run(ctx context.Context) error {
	var ips []netip.Addr
	for _, a := range append(append([]netip.AddrPort(nil), s.opts.HTTPS...), s.opts.TLS...) {
		ips = append(ips, a.Addr())
	}
	cert, err := selfSigned(s.opts.Name, ips)
	if err != nil {
		return fmt.Errorf("make certificate: %w", err)
	}
	s.conf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	hs := &http.Server{Handler: http.HandlerFunc(s.serveAPI), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		// Probes that close before the handshake are normal here, not errors.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	hl := s.hl
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = hs.Serve(hl) // returns when hl closes
	}()

	var cs *http.Server
	if s.opts.ControlSocket != "" {
		cs, err = s.serveControl()
		if err != nil {
			s.shutdown(hs, hl, nil)
			return err
		}
	}
	s.mu.Lock()
	err = s.bindLocked()
	s.mu.Unlock()
	if err != nil {
		s.shutdown(hs, hl, cs)
		return err
	}
	close(s.ready)
	s.log.Info("serving", "https", s.https, "tls", s.tls, "control", s.opts.ControlSocket)
	<-ctx.Done()
	s.shutdown(hs, hl, cs)
	return nil
}

func (s *Server) shutdown(hs *http.Server, hl *chanListener, cs *http.Server) {
	s.mu.Lock()
	s.done = true
	s.closeListenersLocked()
	s.closeConnsLocked()
	s.mu.Unlock()
	_ = hl.Close()
	_ = hs.Close()
	if cs != nil {
		_ = cs.Close()
	}
	s.wg.Wait()
}

// SetState switches how the server answers.
func (s *Server) SetState(st State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errors.New("server has stopped")
	}
	switch st {
	case Serving, Blackhole:
		// Connections held by a blackhole are dropped when it ends, and
		// open ones when it begins, so that a change always takes effect.
		s.closeConnsLocked()
		if len(s.listeners) == 0 {
			if err := s.bindLocked(); err != nil {
				return err
			}
		}
	case Stopped:
		s.closeListenersLocked()
		s.closeConnsLocked()
	default:
		return fmt.Errorf("unknown state %q", st)
	}
	if st != s.state {
		s.log.Info("state changed", "from", s.state, "to", st)
	}
	s.state = st
	return nil
}

// SetFailHealth makes /healthz, /readyz and /livez answer 500 while on.
func (s *Server) SetFailHealth(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on != s.failHealth {
		s.log.Info("health failure", "on", on)
	}
	s.failHealth = on
}

// Status is the control API's view of a server.
type Status struct {
	Name       string   `json:"name"`
	State      State    `json:"state"`
	FailHealth bool     `json:"fail_health"`
	HTTPS      []string `json:"https"`
	TLS        []string `json:"tls"`
}

// Status reports the current state.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.opts.Name, State: s.state, FailHealth: s.failHealth}
	for _, a := range s.https {
		st.HTTPS = append(st.HTTPS, a.String())
	}
	for _, a := range s.tls {
		st.TLS = append(st.TLS, a.String())
	}
	return st
}

// bindLocked opens every listener, keeping ports chosen by an earlier bind
// so a restarted server comes back where clients expect it.
func (s *Server) bindLocked() error {
	bind := func(addrs []netip.AddrPort, api bool) error {
		for i, a := range addrs {
			ln, err := net.Listen("tcp", a.String())
			if err != nil {
				return fmt.Errorf("listen on %s: %w", a, err)
			}
			if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
				addrs[i] = ap
			}
			s.listeners = append(s.listeners, ln)
			s.wg.Add(1)
			go s.accept(ln, api)
		}
		return nil
	}
	err := bind(s.https, true)
	if err == nil {
		err = bind(s.tls, false)
	}
	if err != nil {
		s.closeListenersLocked()
	}
	return err
}

func (s *Server) closeListenersLocked() {
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.listeners = nil
}

func (s *Server) closeConnsLocked() {
	for c := range s.conns {
		_ = c.Conn.Close() // untracked here; trackedConn.Close would re-lock
		delete(s.conns, c)
	}
}

func (s *Server) accept(ln net.Listener, api bool) {
	defer s.wg.Done()
	for {
		raw, err := ln.Accept()
		if err != nil {
			return // closed by Stop or shutdown
		}
		c := &trackedConn{Conn: raw, s: s}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			_ = raw.Close()
			return
		}
		s.conns[c] = struct{}{}
		hold := s.state == Blackhole
		s.mu.Unlock()
		if hold {
			continue // kept open and silent until the state changes
		}
		if api {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				select {
				case s.hl.conns <- tls.Server(c, s.conf):
				case <-s.hl.done:
					_ = c.Close()
				}
			}()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveTalos(c)
		}()
	}
}

// serveTalos completes a TLS handshake, writes the server's name and closes.
func (s *Server) serveTalos(c *trackedConn) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Server(c, s.conf)
	if err := tc.Handshake(); err != nil {
		s.log.Debug("tls handshake failed", "err", err)
		return
	}
	_, _ = tc.Write([]byte(s.opts.Name + "\n"))
	_ = tc.Close()
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	fail := s.failHealth
	s.mu.Unlock()
	w.Header().Set(NameHeader, s.opts.Name)
	w.Header().Set("Content-Type", "text/plain")
	switch r.URL.Path {
	case "/healthz", "/readyz", "/livez":
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = fmt.Fprintf(w, "fail %s\n", s.opts.Name)
			return
		}
	}
	_, _ = fmt.Fprintf(w, "ok %s\n", s.opts.Name)
}

// trackedConn forgets itself when closed, so Stop can close what is open.
type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// chanListener hands connections accepted elsewhere to an http.Server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
