package health

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"halb/internal/config"
)

// listen opens a TCP listener on ip with a free port, closed when the test ends.
// wait bounds every wait on a goroutine or server of the test.
const wait = 5 * time.Second

func listen(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func addrOf(t *testing.T, ln net.Listener) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		t.Fatalf("parse listener address: %v", err)
	}
	return ap
}

// refusedAddr returns an address on ip where nothing listens.
func refusedAddr(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln := listen(t, ip)
	ap := addrOf(t, ln)
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return ap
}

// serve starts an HTTP server on ip, with TLS if cfg is not nil.
func serve(t *testing.T, ip string, h http.Handler, cfg *tls.Config) *httptest.Server {
	t.Helper()
	return serveWith(t, ip, h, cfg, nil)
}

// serveWith is serve with a hook to adjust the server before it starts.
func serveWith(t *testing.T, ip string, h http.Handler, cfg *tls.Config, setup func(*http.Server)) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	if setup != nil {
		setup(s.Config)
	}
	_ = s.Listener.Close()
	s.Listener = listen(t, ip)
	// Failed handshakes are part of the tests; keep them out of the output.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cfg != nil {
		s.TLS = cfg
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func serverAddr(t *testing.T, s *httptest.Server) netip.AddrPort {
	t.Helper()
	return addrOf(t, s.Listener)
}

func mustChecker(t *testing.T, hc config.HealthCheck) Checker {
	t.Helper()
	c, err := NewChecker(hc)
	if err != nil {
		t.Fatalf("NewChecker(%+v): %v", hc, err)
	}
	return c
}

// check runs one probe bounded by timeout, as the runner would.
func check(t *testing.T, c Checker, addr netip.AddrPort, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	before := time.Now()
	res := c.Check(ctx, addr)
	if res.At.Before(before) || res.At.After(time.Now()) {
		t.Errorf("result At %v outside the probe", res.At)
	}
	if res.Latency <= 0 || res.Latency > time.Since(before) {
		t.Errorf("latency %v, want within the probe's %v", res.Latency, time.Since(before))
	}
	return res
}

func wantOK(t *testing.T, res Result, reason string) {
	t.Helper()
	if !res.OK || res.Reason != reason {
		t.Fatalf("result %+v, want ok with reason %q", res, reason)
	}
}

func wantFail(t *testing.T, res Result, reason string) {
	t.Helper()
	if res.OK || !strings.Contains(res.Reason, reason) {
		t.Fatalf("result %+v, want failure with reason containing %q", res, reason)
	}
	if want := strings.Contains(reason, "timeout after"); res.TimedOut != want {
		t.Fatalf("result %+v: timed out %v, want %v", res, res.TimedOut, want)
	}
}

func TestTCPCheck(t *testing.T) {
	c := mustChecker(t, config.HealthCheck{Type: config.CheckTCP})
	up := addrOf(t, listen(t, "127.0.0.21"))
	wantOK(t, check(t, c, up, time.Second), "connected")
	wantFail(t, check(t, c, refusedAddr(t, "127.0.0.21"), time.Second), "connection refused")
}

func TestTLSCheck(t *testing.T) {
	const ip = "127.0.0.23"
	pki := newTestPKI(t, ip)
	srv := serve(t, ip, http.NotFoundHandler(), pki.serverConfig())
	addr := serverAddr(t, srv)

	tests := []struct {
		name   string
		opts   config.TLSOptions
		ok     bool
		reason string
	}{
		{"no verification by default", config.TLSOptions{}, true, "handshake ok (TLS 1.3)"},
		{"verified by name", config.TLSOptions{Verify: true, CAFile: pki.caFile, ServerName: serverName}, true, "handshake ok (TLS 1.3)"},
		{"verified by IP without a name", config.TLSOptions{Verify: true, CAFile: pki.caFile}, true, "handshake ok (TLS 1.3)"},
		{"unknown CA", config.TLSOptions{Verify: true, ServerName: serverName}, false, "tls handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"wrong name", config.TLSOptions{Verify: true, CAFile: pki.caFile, ServerName: "other.test"}, false, "tls handshake: tls: failed to verify certificate: x509: certificate is valid for health.test, not other.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustChecker(t, config.HealthCheck{Type: config.CheckTLS, TLS: tt.opts})
			res := check(t, c, addr, 2*time.Second)
			if tt.ok {
				wantOK(t, res, tt.reason)
			} else {
				wantFail(t, res, tt.reason)
			}
		})
	}

	c := mustChecker(t, config.HealthCheck{Type: config.CheckTLS})
	t.Run("refused", func(t *testing.T) {
		wantFail(t, check(t, c, refusedAddr(t, ip), time.Second), "connection refused")
	})
	t.Run("server that never speaks", func(t *testing.T) {
		// The kernel completes the TCP handshake; nobody ever answers the hello.
		silent := addrOf(t, listen(t, ip))
		res := check(t, c, silent, 300*time.Millisecond)
		// The check names the budget it had left when it began, which on a
		// loaded machine is a few milliseconds short of the context's 300ms.
		after, found := strings.CutPrefix(res.Reason, "tls handshake: timeout after ")
		d, err := time.ParseDuration(after)
		if res.OK || !res.TimedOut || !found || err != nil || d < 250*time.Millisecond || d > 300*time.Millisecond {
			t.Fatalf("result %+v, want failure %q", res, "tls handshake: timeout after 300ms")
		}
	})
	t.Run("server speaking plain text", func(t *testing.T) {
		plain := serve(t, ip, http.NotFoundHandler(), nil)
		res := check(t, c, serverAddr(t, plain), 2*time.Second)
		wantFail(t, res, "tls handshake: tls: first record does not look like a TLS handshake")
	})
}

// recordingConn keeps a copy of every byte the server reads.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got = append(c.got, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// recordTypes splits a TLS byte stream into its record content types.
func recordTypes(b []byte) []byte {
	var types []byte
	for len(b) >= 5 {
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if len(b) < n {
			break
		}
		types = append(types, b[0])
		b = b[n:]
	}
	return types
}

// TestTLSCheckSendsCloseNotify proves that the check ends the session with a
// close_notify alert and a clean TCP close, so servers see probes as clean
// disconnects rather than truncated sessions or resets.
func TestTLSCheckSendsCloseNotify(t *testing.T) {
	const (
		recordAlert   = 21
		recordAppData = 23
	)
	pki := newTestPKI(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			ln := listen(t, "127.0.0.24")
			type outcome struct {
				hsErr, readErr, rawErr error
				types                  []byte
			}
			done := make(chan outcome, 1)
			go func() {
				var o outcome
				defer func() { done <- o }()
				conn, err := ln.Accept()
				if err != nil {
					o.hsErr = err
					return
				}
				defer func() { _ = conn.Close() }()
				rc := &recordingConn{Conn: conn}
				cfg := pki.serverConfig()
				cfg.MinVersion, cfg.MaxVersion = version, version
				srv := tls.Server(rc, cfg)
				_ = conn.SetDeadline(time.Now().Add(wait))
				if o.hsErr = srv.Handshake(); o.hsErr != nil {
					return
				}
				_, o.readErr = srv.Read(make([]byte, 64))
				// After the alert, the TCP stream itself must end cleanly.
				_, o.rawErr = conn.Read(make([]byte, 64))
				rc.mu.Lock()
				o.types = recordTypes(rc.got)
				rc.mu.Unlock()
			}()

			c := mustChecker(t, config.HealthCheck{Type: config.CheckTLS})
			wantOK(t, check(t, c, addrOf(t, ln), 2*time.Second), "handshake ok ("+tls.VersionName(version)+")")

			var o outcome
			select {
			case o = <-done:
			case <-time.After(wait):
				t.Fatal("server side never finished")
			}
			if o.hsErr != nil {
				t.Fatalf("server handshake: %v", o.hsErr)
			}
			// crypto/tls reports io.EOF for close_notify and for a bare FIN at
			// a record boundary, so the record types below tell them apart.
			if !errors.Is(o.readErr, io.EOF) {
				t.Fatalf("server read after handshake: %v, want io.EOF", o.readErr)
			}
			if !errors.Is(o.rawErr, io.EOF) {
				t.Fatalf("server raw read after close_notify: %v, want io.EOF (a FIN, not a reset)", o.rawErr)
			}
			if len(o.types) == 0 {
				t.Fatal("server received no records")
			}
			last := o.types[len(o.types)-1]
			switch version {
			case tls.VersionTLS12:
				// Alerts keep their cleartext record type in TLS 1.2.
				if last != recordAlert {
					t.Fatalf("record types %v: last is %d, want an alert (%d)", o.types, last, recordAlert)
				}
			case tls.VersionTLS13:
				// Everything after the hello is disguised as application
				// data: the client's Finished, then (only) the alert, as the
				// check never sends application data.
				n := 0
				for _, typ := range o.types {
					if typ == recordAppData {
						n++
					}
				}
				if n != 2 {
					t.Fatalf("record types %v: %d encrypted records, want 2 (Finished, close_notify)", o.types, n)
				}
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	const ip = "127.0.0.26"
	pki := newTestPKI(t, ip)
	withCert := config.TLSOptions{CertFile: pki.clientCertFile, KeyFile: pki.clientKeyFile}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			cfg := pki.serverConfig()
			cfg.MinVersion, cfg.MaxVersion = version, version
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = pki.pool
			srv := serve(t, ip, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), cfg)
			addr := serverAddr(t, srv)

			wantOK(t, check(t, mustChecker(t, config.HealthCheck{Type: config.CheckTLS, TLS: withCert}), addr, 2*time.Second),
				"handshake ok ("+tls.VersionName(version)+")")
			wantOK(t, check(t, mustChecker(t, config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz", TLS: withCert}), addr, 2*time.Second),
				"200 OK")
			// Without the certificate the server refuses; in TLS 1.3 only
			// after the client's side of the handshake has completed.
			for _, typ := range []config.CheckType{config.CheckTLS, config.CheckHTTPS} {
				res := check(t, mustChecker(t, config.HealthCheck{Type: typ, Path: "/healthz"}), addr, 2*time.Second)
				wantFail(t, res, "tls handshake: remote error: tls: ")
				if res.Failure != Rejected {
					t.Fatalf("%s check without a certificate: failure %s, want rejected", typ, res.Failure)
				}
			}
		})
	}
}

// healthServer answers like a Kubernetes API server and records what it saw.
type healthServer struct {
	hosts chan string
	conns atomic.Int64
}

func (h *healthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case h.hosts <- r.Host:
	default:
	}
	switch r.URL.Path {
	case "/":
		_, _ = io.WriteString(w, "root")
	case "/healthz":
		if r.URL.RawQuery != "" && r.URL.RawQuery != "verbose" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	case "/readyz":
		w.WriteHeader(http.StatusNoContent)
	case "/broken":
		http.Error(w, "etcd failed", http.StatusInternalServerError)
	case "/moved":
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	case "/big":
		chunk := strings.Repeat("x", 64<<10)
		for range 64 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	case "/hang":
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}

func newHealthServer(t *testing.T, ip string, cfg *tls.Config) (*healthServer, *httptest.Server) {
	t.Helper()
	h := &healthServer{hosts: make(chan string, 1)}
	s := serveWith(t, ip, h, cfg, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				h.conns.Add(1)
			}
		}
	})
	return h, s
}

func (h *healthServer) host(t *testing.T) string {
	t.Helper()
	select {
	case host := <-h.hosts:
		return host
	case <-time.After(wait):
		t.Fatal("server saw no request")
		return ""
	}
}

func TestHTTPChecks(t *testing.T) {
	pki := newTestPKI(t, "127.0.0.27")
	for _, typ := range []config.CheckType{config.CheckHTTP, config.CheckHTTPS} {
		t.Run(string(typ), func(t *testing.T) {
			ip, cfg := "127.0.0.28", (*tls.Config)(nil)
			if typ == config.CheckHTTPS {
				ip, cfg = "127.0.0.27", pki.serverConfig()
			}
			h, srv := newHealthServer(t, ip, cfg)
			addr := serverAddr(t, srv)
			tests := []struct {
				name   string
				path   string
				expect []int
				ok     bool
				reason string
			}{
				{"healthz", "/healthz", nil, true, "200 OK"},
				{"healthz with query", "/healthz?verbose", []int{200}, true, "200 OK"},
				{"readyz", "/readyz", nil, true, "204 No Content"},
				{"readyz not in expected", "/readyz", []int{200}, false, "status 204, want 200"},
				{"server error", "/broken", nil, false, "status 500, want 200-399"},
				{"server error with expected list", "/broken", []int{200, 204}, false, "status 500, want 200 or 204"},
				{"redirect answered, not followed", "/moved", nil, true, "302 Found"},
				{"empty path asks for root", "", []int{200}, true, "200 OK"},
				{"large body", "/big", nil, true, "200 OK"},
				{"missing", "/nope", nil, false, "status 404, want 200-399"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					c := mustChecker(t, config.HealthCheck{Type: typ, Path: tt.path, ExpectStatus: tt.expect})
					res := check(t, c, addr, 2*time.Second)
					if tt.ok {
						wantOK(t, res, tt.reason)
					} else if res.OK || res.Reason != tt.reason {
						t.Fatalf("result %+v, want failure %q", res, tt.reason)
					}
					if host := h.host(t); host != addr.String() {
						t.Fatalf("Host header %q, want the address %q", host, addr)
					}
				})
			}
			t.Run("each probe is a new connection", func(t *testing.T) {
				c := mustChecker(t, config.HealthCheck{Type: typ, Path: "/healthz"})
				before := h.conns.Load()
				for range 3 {
					wantOK(t, check(t, c, addr, 2*time.Second), "200 OK")
					h.host(t)
				}
				if n := h.conns.Load() - before; n != 3 {
					t.Fatalf("%d new connections for 3 probes, want 3", n)
				}
			})
			t.Run("timeout", func(t *testing.T) {
				// Long enough for a TLS handshake under load: the
				// timeout must strike while the request hangs.
				c := mustChecker(t, config.HealthCheck{Type: typ, Path: "/hang"})
				res := check(t, c, addr, time.Second)
				h.host(t)
				if res.OK || !res.TimedOut || res.Reason != "timeout after 1s" {
					t.Fatalf("result %+v, want failure %q", res, "timeout after 1s")
				}
			})
			t.Run("refused", func(t *testing.T) {
				c := mustChecker(t, config.HealthCheck{Type: typ, Path: "/healthz"})
				wantFail(t, check(t, c, refusedAddr(t, ip), time.Second), "connection refused")
			})
		})
	}
}

func TestHTTPSServerNameSetsHostAndSNI(t *testing.T) {
	const ip = "127.0.0.29"
	pki := newTestPKI(t) // no IP SANs: only the name verifies
	cfg := pki.serverConfig()
	snis := make(chan string, 1)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		select {
		case snis <- hello.ServerName:
		default:
		}
		return nil, nil
	}
	h, srv := newHealthServer(t, ip, cfg)
	c := mustChecker(t, config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz",
		TLS: config.TLSOptions{ServerName: serverName, CAFile: pki.caFile, Verify: true}})
	wantOK(t, check(t, c, serverAddr(t, srv), 2*time.Second), "200 OK")
	if host := h.host(t); host != serverName {
		t.Fatalf("Host header %q, want %q", host, serverName)
	}
	select {
	case sni := <-snis:
		if sni != serverName {
			t.Fatalf("SNI %q, want %q", sni, serverName)
		}
	case <-time.After(wait):
		t.Fatal("server saw no client hello")
	}
}

func TestHTTPSAgainstPlainHTTP(t *testing.T) {
	_, srv := newHealthServer(t, "127.0.0.30", nil)
	c := mustChecker(t, config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz"})
	wantFail(t, check(t, c, serverAddr(t, srv), 2*time.Second),
		"tls handshake: tls: first record does not look like a TLS handshake")
}

func TestNewCheckerErrors(t *testing.T) {
	pki := newTestPKI(t)
	missing := pki.dir + "/missing-ca.pem"
	notPEM := writePEM(t, pki.dir, "empty.pem", "NOTHING", nil)
	tests := []struct {
		name string
		hc   config.HealthCheck
		want string
	}{
		{"unknown type", config.HealthCheck{Type: "icmp"}, `unknown health check type "icmp"`},
		{"missing CA file (tls)", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CAFile: missing}}, missing},
		{"missing CA file (https)", config.HealthCheck{Type: config.CheckHTTPS, TLS: config.TLSOptions{CAFile: missing}}, missing},
		{"CA file without certificates", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CAFile: notPEM}}, notPEM},
		{"missing client cert", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CertFile: pki.dir + "/nope.pem", KeyFile: pki.clientKeyFile}}, pki.dir + "/nope.pem"},
		{"missing client key", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CertFile: pki.clientCertFile, KeyFile: pki.dir + "/nokey.pem"}}, pki.dir + "/nokey.pem"},
		{"key not matching", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CertFile: pki.clientCertFile, KeyFile: pki.caFile}}, pki.caFile},
		{"cert without key", config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{CertFile: pki.clientCertFile}}, "must be set together"},
		{"URL instead of path", config.HealthCheck{Type: config.CheckHTTP, Path: "//x/healthz"}, "want a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The strict loader: NewChecker turns a missing file (only)
			// into a check rejected for credentials, see pending_test.go.
			c, err := newChecker(tt.hc)
			if err == nil {
				t.Fatalf("newChecker returned %T, want an error mentioning %q", c, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	// The files of a plain tcp or http check are none of its business.
	if _, err := NewChecker(config.HealthCheck{Type: config.CheckHTTP, TLS: config.TLSOptions{CAFile: missing}}); err != nil {
		t.Fatalf("http check with unused CA file: %v", err)
	}
}
