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
	"sync/atomic"
	"time"
)

// State says how a fake control plane answers connections.
type State string

// States of a fake control plane.
const (
	// Serving answers HTTPS and TLS normally.
	Serving State = "serving"
	// Stopping is kube-apiserver's --shutdown-delay-duration: /readyz
	// fails while everything else, new connections included, is served
	// until the delay passes and the server stops gracefully.
	Stopping State = "stopping"
	// Stopped closes every listener and connection, so connects are refused,
	// like a host whose API server process died.
	Stopped State = "stopped"
	// Blackhole keeps listening and accepting but never answers, like a
	// hung process: connects succeed, handshakes time out.
	Blackhole State = "blackhole"
)

// NameHeader is the response header naming the control plane that answered.
const NameHeader = "X-Fakecp"

// PeerHeader is the response header naming the address the request came
// from: the LB node's, for a request halb proxied.
const PeerHeader = "X-Fakecp-Peer"

// tick is how often a watch or a Talos stream writes.
const tick = 100 * time.Millisecond

// Options configure a fake control plane.
type Options struct {
	Name          string           // reported in every answer
	HTTPS         []netip.AddrPort // Kubernetes-API-like listeners (port 0 picks one)
	TLS           []netip.AddrPort // Talos-API-like listeners (port 0 picks one)
	ControlSocket string           // unix socket of the control API; "" for none
	// PKIDir is a directory WritePKI filled. With it the server mints its
	// certificates from the CAs there and authenticates clients as Talos
	// does; without it, it uses self-signed certificates and answers anyone.
	PKIDir string
	// SANs are addresses the server certificates carry besides the listen
	// addresses: the cluster endpoint, as Talos's certSANs.
	SANs []netip.Addr
}

// Server is one fake control plane. Its zero value is not usable; call New.
type Server struct {
	opts  Options
	log   *slog.Logger
	ready chan struct{}
	stop  chan struct{} // closed when Run ends, to cancel pending shutdowns

	auth      *authority // nil without Options.PKIDir
	apiConf   *tls.Config
	talosConf *tls.Config
	wg        sync.WaitGroup

	mu         sync.Mutex
	state      State
	failHealth bool
	https, tls []netip.AddrPort // resolved listen addresses, fixed after the first bind
	gen        *generation      // the listeners and connections of this serving period; nil when stopped
	epoch      int              // bumped by every state change, so a late shutdown timer does nothing
	counts     [2]Counters      // by listener: api, talos
	done       bool
	slow       slowAccept // see SetSlowAccept
}

// New returns a fake control plane; it does nothing until Run.
func New(opts Options, log *slog.Logger) *Server {
	return &Server{
		opts:   opts,
		log:    log.With("component", "fakecp", "server", opts.Name),
		ready:  make(chan struct{}),
		stop:   make(chan struct{}),
		state:  Serving,
		https:  append([]netip.AddrPort(nil), opts.HTTPS...),
		tls:    append([]netip.AddrPort(nil), opts.TLS...),
		counts: [2]Counters{newCounters(), newCounters()},
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
	if err := s.makeTLS(); err != nil {
		return err
	}
	var cs *http.Server
	if s.opts.ControlSocket != "" {
		var err error
		if cs, err = s.serveControl(); err != nil {
			s.wg.Wait()
			return err
		}
	}
	s.mu.Lock()
	err := s.bindLocked()
	s.mu.Unlock()
	if err != nil {
		s.shutdown(cs)
		return err
	}
	close(s.ready)
	s.log.Info("serving", "https", s.https, "tls", s.tls, "control", s.opts.ControlSocket, "pki", s.opts.PKIDir)
	<-ctx.Done()
	s.shutdown(cs)
	return nil
}

// makeTLS prepares both listeners' TLS configs: kube-apiserver asks for a
// client certificate but verifies it in its authenticator (an untrusted
// one gets 401, not a failed handshake); apid requires one from the OS CA
// and speaks TLS 1.3 only.
func (s *Server) makeTLS() error {
	var addrs []netip.Addr
	for _, a := range append(append([]netip.AddrPort(nil), s.opts.HTTPS...), s.opts.TLS...) {
		addrs = append(addrs, a.Addr())
	}
	addrs = append(addrs, s.opts.SANs...)
	if s.opts.PKIDir == "" {
		cert, err := selfSigned(s.opts.Name, addrs)
		if err != nil {
			return fmt.Errorf("make certificate: %w", err)
		}
		s.apiConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		s.talosConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
		return nil
	}
	a, err := loadAuthority(s.opts.PKIDir)
	if err != nil {
		return fmt.Errorf("pki %s: %w", s.opts.PKIDir, err)
	}
	apiCert, err := a.serverCert(s.opts.Name, false, addrs)
	if err != nil {
		return fmt.Errorf("make API certificate: %w", err)
	}
	talosCert, err := a.serverCert(s.opts.Name, true, addrs)
	if err != nil {
		return fmt.Errorf("make Talos API certificate: %w", err)
	}
	s.auth = a
	s.apiConf = &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert, NextProtos: []string{"http/1.1"}}
	s.talosConf = &tls.Config{Certificates: []tls.Certificate{talosCert}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: a.osPool, NextProtos: []string{"h2"}}
	return nil
}

func (s *Server) shutdown(cs *http.Server) {
	close(s.stop)
	s.mu.Lock()
	s.done = true
	g := s.detachLocked()
	s.mu.Unlock()
	g.closeNow()
	if cs != nil {
		_ = cs.Close()
	}
	s.wg.Wait()
}

// SetState switches how the server answers at once; a pending graceful
// shutdown is cancelled.
func (s *Server) SetState(st State) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return errors.New("server has stopped")
	}
	var old *generation
	switch st {
	case Serving, Blackhole:
		// Connections held by a blackhole are dropped when it ends, and
		// open ones when it begins, so that a change always takes effect.
		if s.gen != nil {
			s.gen.closeConns()
		} else if err := s.bindLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
	case Stopped:
		old = s.detachLocked()
	case Stopping:
		s.mu.Unlock()
		return errors.New("use Shutdown to stop gracefully")
	default:
		s.mu.Unlock()
		return fmt.Errorf("unknown state %q", st)
	}
	s.setStateLocked(st)
	s.mu.Unlock()
	old.closeNow()
	return nil
}

func (s *Server) setStateLocked(st State) {
	s.epoch++
	if st != s.state {
		s.log.Info("state changed", "from", s.state, "to", st)
	}
	s.state = st
}

// Shutdown starts a graceful stop like kube-apiserver's on SIGTERM with
// --shutdown-delay-duration: /readyz fails at once while every other
// request, watch and new connection is still served; after delay the
// listeners close, watches and Talos streams end cleanly, and the state
// becomes Stopped. SetState cancels it.
func (s *Server) Shutdown(delay time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errors.New("server has stopped")
	}
	if s.gen == nil {
		return errors.New("server is not serving")
	}
	s.setStateLocked(Stopping)
	epoch := s.epoch
	s.log.Info("shutting down", "delay", delay)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			s.finishShutdown(epoch)
		case <-s.stop:
		}
	}()
	return nil
}

func (s *Server) finishShutdown(epoch int) {
	s.mu.Lock()
	if s.done || s.epoch != epoch {
		s.mu.Unlock()
		return
	}
	g := s.detachLocked()
	s.mu.Unlock()
	g.closeGracefully()
	s.mu.Lock()
	if !s.done && s.epoch == epoch {
		s.setStateLocked(Stopped)
	}
	s.mu.Unlock()
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
	// Authenticated says whether the server checks credentials (it was
	// given a PKI directory).
	Authenticated bool `json:"authenticated"`
	// API counts what happened on the Kubernetes-API-like listeners, Talos
	// on the Talos-API-like ones.
	API   Counters `json:"api"`
	Talos Counters `json:"talos"`
}

// Counters count events by the client's source IP.
type Counters struct {
	// HandshakeFailures are TLS handshakes a client began (it sent a
	// ClientHello) that failed: no or an untrusted certificate on the
	// Talos port, a protocol or version mismatch, a timeout mid-way.
	HandshakeFailures map[string]int `json:"handshake_failures"`
	// ClosedBeforeHello are connections that ended (or timed out) before
	// a single byte of a ClientHello: plain TCP checks.
	ClosedBeforeHello map[string]int `json:"closed_before_hello"`
	// ClosedAfterHandshake are clients whose certificate was accepted and
	// whose handshake was complete, but which hung up before the server
	// had sent its TLS 1.3 session tickets, failing the server's side
	// (HAProxy's check-ssl does this). Not counted as authenticated.
	ClosedAfterHandshake map[string]int `json:"closed_after_handshake"`
	Unauthorized         map[string]int `json:"unauthorized"`  // 401 answers (API)
	Forbidden            map[string]int `json:"forbidden"`     // 403 answers (API)
	Authenticated        map[string]int `json:"authenticated"` // requests (API) or connections (Talos) that authenticated
}

func newCounters() Counters {
	return Counters{HandshakeFailures: map[string]int{}, ClosedBeforeHello: map[string]int{}, ClosedAfterHandshake: map[string]int{},
		Unauthorized: map[string]int{}, Forbidden: map[string]int{}, Authenticated: map[string]int{}}
}

func (c Counters) clone() Counters {
	out := newCounters()
	for src, m := range map[*map[string]int]map[string]int{
		&out.HandshakeFailures: c.HandshakeFailures, &out.ClosedBeforeHello: c.ClosedBeforeHello, &out.ClosedAfterHandshake: c.ClosedAfterHandshake,
		&out.Unauthorized: c.Unauthorized, &out.Forbidden: c.Forbidden, &out.Authenticated: c.Authenticated,
	} {
		for k, v := range m {
			(*src)[k] = v
		}
	}
	return out
}

// event is something Counters count.
type event int

const (
	evHandshakeFailure event = iota
	evClosedBeforeHello
	evClosedAfterHandshake
	evUnauthorized
	evForbidden
	evAuthenticated
)

// listener kinds, the index into Server.counts.
const (
	apiListener   = 0
	talosListener = 1
)

func (e event) String() string {
	switch e {
	case evHandshakeFailure:
		return "handshake_failure"
	case evClosedBeforeHello:
		return "closed_before_hello"
	case evClosedAfterHandshake:
		return "closed_after_handshake"
	case evUnauthorized:
		return "unauthorized"
	case evForbidden:
		return "forbidden"
	case evAuthenticated:
		return "authenticated"
	}
	return fmt.Sprintf("event(%d)", int(e))
}

func (s *Server) note(kind int, ev event, remote net.Addr) {
	src := remote.String()
	if ap, err := netip.ParseAddrPort(src); err == nil {
		src = ap.Addr().String()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts[kind]
	switch ev {
	case evHandshakeFailure:
		c.HandshakeFailures[src]++
	case evClosedBeforeHello:
		c.ClosedBeforeHello[src]++
	case evClosedAfterHandshake:
		c.ClosedAfterHandshake[src]++
	case evUnauthorized:
		c.Unauthorized[src]++
	case evForbidden:
		c.Forbidden[src]++
	case evAuthenticated:
		c.Authenticated[src]++
	}
}

// Status reports the current state.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.opts.Name, State: s.state, FailHealth: s.failHealth, Authenticated: s.opts.PKIDir != "",
		API: s.counts[apiListener].clone(), Talos: s.counts[talosListener].clone()}
	for _, a := range s.https {
		st.HTTPS = append(st.HTTPS, a.String())
	}
	for _, a := range s.tls {
		st.TLS = append(st.TLS, a.String())
	}
	return st
}

// generation is one serving period: from a bind to a stop. Its listeners,
// HTTP server and connections end together.
type generation struct {
	listeners []net.Listener
	hs        *http.Server
	hl        *chanListener // handshaken API connections handed to hs
	quit      chan struct{} // closed to end watches and Talos streams
	streams   sync.WaitGroup

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	ended bool
}

// bindLocked opens every listener in a new generation, keeping ports
// chosen by an earlier bind so a restarted server comes back where clients
// expect it.
func (s *Server) bindLocked() error {
	g := &generation{
		hl:    &chanListener{conns: make(chan net.Conn), done: make(chan struct{})},
		quit:  make(chan struct{}),
		conns: map[*trackedConn]struct{}{},
	}
	g.hs = &http.Server{Handler: s.apiHandler(g), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		// Handshakes are done and logged before hs sees a connection.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	bind := func(addrs []netip.AddrPort) error {
		for i, a := range addrs {
			ln, err := net.Listen("tcp", a.String())
			if err != nil {
				return fmt.Errorf("listen on %s: %w", a, err)
			}
			if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
				addrs[i] = ap
			}
			g.listeners = append(g.listeners, ln)
		}
		return nil
	}
	err := bind(s.https)
	if err == nil {
		err = bind(s.tls)
	}
	if err != nil {
		g.closeNow()
		return err
	}
	for i, ln := range g.listeners {
		s.wg.Add(1)
		go s.accept(g, ln, i < len(s.https))
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = g.hs.Serve(g.hl) // returns when hl closes
	}()
	s.gen = g
	return nil
}

// detachLocked takes the current generation out of service, closing its
// listeners; the caller ends its connections once it has unlocked.
func (s *Server) detachLocked() *generation {
	g := s.gen
	s.gen = nil
	if g != nil {
		for _, ln := range g.listeners {
			_ = ln.Close()
		}
	}
	return g
}

// closeNow ends a generation abruptly, as a crash would.
func (g *generation) closeNow() {
	if g == nil {
		return
	}
	g.endStreams()
	_ = g.hs.Close()
	g.closeConns()
}

// closeGracefully ends watches with the end of their chunked body and
// Talos streams with close_notify, then closes what is left.
func (g *generation) closeGracefully() {
	if g == nil {
		return
	}
	g.endStreams()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = g.hs.Shutdown(ctx) // closes idle connections, waits for the watches' ends
	done := make(chan struct{})
	go func() {
		g.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	_ = g.hs.Close()
	g.closeConns()
}

func (g *generation) endStreams() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ended {
		g.ended = true
		close(g.quit)
		_ = g.hl.Close()
	}
}

// track adds c, unless the generation has ended.
func (g *generation) track(c *trackedConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *generation) closeConns() {
	g.mu.Lock()
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
		delete(g.conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

func (s *Server) accept(g *generation, ln net.Listener, api bool) {
	defer s.wg.Done()
	s.mu.Lock()
	s.slow.apply(ln)
	s.mu.Unlock()
	for {
		raw, err := ln.Accept()
		if err != nil {
			return // closed by a stop
		}
		c := &trackedConn{Conn: raw, g: g}
		s.mu.Lock()
		stale := s.done || s.gen != g
		hold := s.state == Blackhole
		pause := s.slow.delay
		s.mu.Unlock()
		if pause > 0 {
			time.Sleep(pause) // the simulated busy server: see SetSlowAccept
		}
		if stale || !g.track(c) {
			_ = raw.Close()
			continue
		}
		if hold {
			continue // kept open and silent until the state changes
		}
		s.wg.Add(1)
		if api {
			go s.serveAPIConn(g, c)
		} else {
			go s.serveTalos(g, c)
		}
	}
}

// handshake completes the server side of TLS on c, counting and logging a
// failure by its kind (classifyHandshakeError). A client that goes away
// before sending a byte is a plain TCP check: kube-apiserver (Go's
// net/http) logs it as "TLS handshake error ... EOF", apid (grpc-go) does
// not log it; both are counted apart from real handshake failures.
func (s *Server) handshake(c *trackedConn, conf *tls.Config, kind int) (*tls.Conn, bool) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	conf = conf.Clone()
	conf.VerifyConnection = func(tls.ConnectionState) error {
		c.clientFlight.Store(true)
		return nil
	}
	tc := tls.Server(c, conf)
	err := tc.Handshake()
	if err == nil {
		_ = c.SetDeadline(time.Time{})
		return tc, true
	}
	_ = c.Close()
	listener := "api"
	if kind == talosListener {
		listener = "talos"
	}
	ev := classifyHandshakeError(c.read.Load(), c.clientFlight.Load())
	s.note(kind, ev, c.RemoteAddr())
	lvl := slog.LevelDebug
	switch {
	case ev == evHandshakeFailure:
		lvl = slog.LevelWarn
	case ev == evClosedBeforeHello && kind == apiListener:
		lvl = slog.LevelWarn // as kube-apiserver's "TLS handshake error from ...: EOF"
	}
	s.log.Log(context.Background(), lvl, "tls handshake failed", "listener", listener, "client", c.RemoteAddr().String(),
		"err", err, "counted_as", ev.String())
	return nil, false
}

// classifyHandshakeError says what a failed server handshake was, from
// how many bytes the client sent and whether its certificate flight was
// accepted. A client that sent nothing is a plain TCP check. One whose
// certificate was accepted has a complete handshake and hung up before
// the server's TLS 1.3 session tickets (a TLS check that closes at once):
// nothing was refused. Anything else is a failed handshake.
func classifyHandshakeError(read int64, clientFlight bool) event {
	switch {
	case read == 0:
		return evClosedBeforeHello
	case clientFlight:
		return evClosedAfterHandshake
	}
	return evHandshakeFailure
}

// serveAPIConn hands a handshaken connection to the generation's HTTP server.
func (s *Server) serveAPIConn(g *generation, c *trackedConn) {
	defer s.wg.Done()
	tc, ok := s.handshake(c, s.apiConf, apiListener)
	if !ok {
		return
	}
	select {
	case g.hl.conns <- tc:
	case <-g.hl.done:
		_ = tc.Close()
	}
}

// trackedConn forgets itself when closed, so a stop can close what is
// open, and counts what it read, to tell a TCP check from a handshake.
type trackedConn struct {
	net.Conn
	g    *generation
	read atomic.Int64
	// clientFlight is set once the client's certificate flight was
	// accepted, after which a failed server handshake is the client
	// hanging up, not a refusal.
	clientFlight atomic.Bool
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
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
