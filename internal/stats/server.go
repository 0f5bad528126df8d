package stats

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/freebind"
)

//go:embed assets
var assetFS embed.FS

// shutdownGrace bounds how long Run waits for requests in flight once its
// context ends.
const shutdownGrace = 5 * time.Second

// maxUserLog bounds a user name in a log line: it is client input.
const maxUserLog = 64

// A client must send a request's headers within headerTimeout of
// starting it, and an idle keep-alive connection is closed after
// idleTimeout: both give a slot of the connection cap back.
const (
	headerTimeout = 3 * time.Second
	idleTimeout   = 30 * time.Second
)

// Server is the stats HTTP server: the dashboard, /status.json and
// /metrics behind a source allow-list and basic auth, plus an optional
// listener serving /metrics alone.
type Server struct {
	cfg     config.Stats
	src     admin.Source
	metrics http.Handler
	log     *slog.Logger

	login    *logins
	certs    *certFiles // nil: plain HTTP
	maxConns int        // per listener; a field so tests can lower it
	tmpl     *template.Template
	style    template.CSS
	script   template.JS
	csp      string
	handler  http.Handler

	mu          sync.Mutex
	addr        netip.AddrPort
	metricsAddr netip.AddrPort
	ready       chan struct{}
	readyOnce   sync.Once
}

// New builds a stats server for cfg reading state from src; metrics (may
// be nil) serves /metrics. It reads cfg.PasswordFile, but neither listens
// nor starts goroutines.
func New(cfg config.Stats, src admin.Source, metrics http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = config.DefaultStatsRefresh
	}
	users, err := loadUsers(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, src: src, metrics: metrics, log: log.With("component", "stats"),
		login:    newLogins(users, decoyHash(users), time.Now, hashSlotsFor(runtime.GOMAXPROCS(0))),
		maxConns: maxConns,
		ready:    make(chan struct{}),
	}
	if cfg.TLS != nil {
		if s.certs, err = loadCertFiles(*cfg.TLS, s.log); err != nil {
			return nil, err
		}
	}
	if err := s.loadAssets(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

func (s *Server) loadAssets() error {
	style, err := assetFS.ReadFile("assets/style.css")
	if err != nil {
		return fmt.Errorf("load dashboard style: %w", err)
	}
	script, err := assetFS.ReadFile("assets/app.js")
	if err != nil {
		return fmt.Errorf("load dashboard script: %w", err)
	}
	tmpl, err := template.New("").ParseFS(assetFS, "assets/dashboard.html")
	if err != nil {
		return fmt.Errorf("parse dashboard template: %w", err)
	}
	s.tmpl, s.style, s.script = tmpl, template.CSS(style), template.JS(script)
	// The page inlines its only style and script; the policy admits those
	// two by hash and nothing else, so no injected markup can load or run
	// anything, and the page can never reach beyond this server.
	s.csp = "default-src 'none'; script-src '" + cspHash(script) + "'; style-src '" + cspHash(style) +
		"'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return nil
}

func cspHash(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// Handler is the main listener's handler, access rules included.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready is closed once Run listens; Addr and MetricsAddr then say where.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is where the dashboard listens, once Ready is closed.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// MetricsAddr is where the separate /metrics listener listens once Ready
// is closed; invalid when there is none.
func (s *Server) MetricsAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}

// Run listens on cfg.Bind (and cfg.MetricsBind when set) and serves until
// ctx ends, then lets requests in flight finish for a few seconds and
// returns nil. The sockets use IP_FREEBIND, so Bind may be a VIP that this
// node does not hold (yet).
func (s *Server) Run(ctx context.Context) error {
	lc := net.ListenConfig{Control: freebind.Control}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Bind.String())
	if ctx.Err() != nil {
		if ln != nil {
			_ = ln.Close() // stopping before serving
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen for stats on %s: %w", s.cfg.Bind, err)
	}
	servers := []*http.Server{s.httpServer(s.handler)}
	var main net.Listener = newGatedListener(ln, s.allowed, s.maxConns, s.log)
	if s.certs != nil {
		// The gate comes first: a refused source costs no handshake.
		main = tls.NewListener(main, s.certs.tlsConfig())
	}
	listeners := []net.Listener{main}
	if s.cfg.MetricsBind.IsValid() {
		mln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsBind.String())
		if err != nil {
			_ = ln.Close() // not served yet: nothing to lose
			return fmt.Errorf("listen for metrics on %s: %w", s.cfg.MetricsBind, err)
		}
		servers = append(servers, s.httpServer(s.metricsOnly()))
		// No allow-list here: the bind address is what limits who can
		// reach it, but the cap still keeps it from eating descriptors.
		listeners = append(listeners, newGatedListener(mln, nil, s.maxConns, s.log))
	}
	s.mu.Lock()
	s.addr = addrPort(listeners[0].Addr())
	if len(listeners) > 1 {
		s.metricsAddr = addrPort(listeners[1].Addr())
	}
	s.mu.Unlock()
	attrs := []any{"addr", s.Addr().String(), "https", s.certs != nil}
	if ma := s.MetricsAddr(); ma.IsValid() {
		attrs = append(attrs, "metrics_addr", ma.String())
	} else {
		attrs = append(attrs, "metrics", "on the same listener, behind the same login")
	}
	s.log.Info("stats listening", attrs...)
	s.readyOnce.Do(func() { close(s.ready) })

	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		g.Go(func() error {
			err := srv.Serve(listeners[i])
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("serve stats on %s: %w", listeners[i].Addr(), err)
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(sctx); err != nil {
				// Slow clients past the grace period are cut off.
				_ = srv.Close()
			}
		}
		return nil
	})
	return g.Wait()
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// routes is the main listener: every path behind the access rules.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.dashboard)
	mux.HandleFunc("GET /panel", s.panel)
	mux.HandleFunc("GET /status.json", s.statusJSON)
	if s.metrics != nil && !s.cfg.MetricsBind.IsValid() {
		mux.Handle("GET /metrics", s.metrics)
	}
	// Headers outermost: a refusal (403, 401, 429) carries them too.
	return headers(s.guard(mux))
}

// metricsOnly is the separate metrics listener: /metrics and nothing else,
// without auth; its bind address is what limits who can reach it.
func (s *Server) metricsOnly() http.Handler {
	mux := http.NewServeMux()
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics)
	}
	return headers(mux)
}

// baseCSP is the policy of every response but the dashboard's own page,
// which replaces it with one admitting its inline style and script: an
// error page or JSON may load nothing and be framed by nobody.
const baseCSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// headers adds what every response carries, refusals included: no
// caching of live state or of an auth failure, no sniffing, no framing,
// no referrers.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", baseCSP)
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// guard applies the access rules in order: the source allow-list (by the
// connection's address; headers can be forged), the failed-login limit,
// then basic auth. The listener already refused sources outside the
// allow-list; checking again here keeps Handler safe on its own.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		// A zoned link-local address matches no prefix; the zone says
		// nothing about who the client is.
		client := ap.Addr().Unmap().WithZone("")
		if !s.allowed(client) {
			http.Error(w, "forbidden: this address may not see the stats page", http.StatusForbidden)
			return
		}
		if ok, wait := s.login.limit.allow(client); !ok {
			tooMany(w, wait, "too many failed logins; try again later")
			return
		}
		name, password, hasAuth := r.BasicAuth()
		if !hasAuth {
			challenge(w)
			return
		}
		v := s.login.check(client, name, password)
		switch v.outcome {
		case loginOK:
			next.ServeHTTP(w, r)
		case loginLimited:
			tooMany(w, v.wait, "too many failed logins; try again later")
		case loginBusy:
			s.log.Debug("stats login deferred: every hashing slot busy", "client", client.String())
			tooMany(w, v.wait, "busy checking other logins; try again shortly")
		default:
			if len(name) > maxUserLog {
				name = name[:maxUserLog]
			}
			s.log.Warn("stats login failed", "client", client.String(), "user", name, "limited", v.limited)
			challenge(w)
		}
	})
}

// tooMany answers 429 with a Retry-After of wait in whole seconds, at
// least one.
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
	http.Error(w, msg, http.StatusTooManyRequests)
}

func challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="halb", charset="UTF-8"`)
	http.Error(w, "authentication required", http.StatusUnauthorized)
}

func (s *Server) allowed(a netip.Addr) bool {
	if len(s.cfg.Allow) == 0 {
		return true
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// snapshot fills what a Source may leave out, so the JSON has arrays
// rather than nulls and pages have a time to measure "ago" from.
func (s *Server) snapshot() admin.Snapshot {
	snap := s.src.Snapshot()
	if snap.Time.IsZero() {
		snap.Time = time.Now()
	}
	if snap.Members == nil {
		snap.Members = []admin.Member{}
	}
	if snap.VIPs == nil {
		snap.VIPs = []admin.VIP{}
	}
	if snap.Frontends == nil {
		snap.Frontends = []admin.Frontend{}
	}
	if snap.Backends == nil {
		snap.Backends = []admin.Backend{}
	}
	if snap.Node.Roles == nil {
		snap.Node.Roles = []admin.VIPRole{}
	}
	return snap
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	// The same document as the admin API's GET /v1/status.
	body, err := json.MarshalIndent(admin.NewStatus(s.snapshot()), "", "  ")
	if err != nil {
		s.log.Error("encode status", "err", err)
		http.Error(w, "encode status failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n')) // a client gone away is not our error
}

// dashboardData is the template's input.
type dashboardData struct {
	Panel       page
	Style       template.CSS
	Script      template.JS
	MetricsHere bool // /metrics is served on this listener
}

func (s *Server) dashboard(w http.ResponseWriter, _ *http.Request) {
	s.render(w, "page", dashboardData{
		Panel: newPage(s.snapshot(), s.cfg.Refresh), Style: s.style, Script: s.script,
		MetricsHere: s.metrics != nil && !s.cfg.MetricsBind.IsValid(),
	})
}

// panel is the page's live part alone, which the script fetches and swaps
// in, so the page is rendered by one template with or without script.
func (s *Server) panel(w http.ResponseWriter, _ *http.Request) {
	s.render(w, "panel", newPage(s.snapshot(), s.cfg.Refresh))
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("render dashboard", "err", err)
		http.Error(w, "render dashboard failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", s.csp)
	_, _ = w.Write(buf.Bytes()) // a client gone away is not our error
}
