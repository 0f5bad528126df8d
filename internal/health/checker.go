package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/internal/config"
)

const (
	// maxBody bounds how much of a response body a check reads; the status
	// decides, the body only needs draining a little.
	maxBody = 4 << 10
	// closeWait bounds how long a TLS check waits for the server's side of
	// the close after sending close_notify.
	closeWait = 250 * time.Millisecond
	// maxCloseReads bounds the records read while waiting for that close.
	maxCloseReads = 16
)

// Checker probes one server once. Check must return soon after ctx ends;
// the runner bounds every probe with the configured timeout.
type Checker interface {
	Check(ctx context.Context, addr netip.AddrPort) Result
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context, addr netip.AddrPort) Result

// Check calls f.
func (f CheckerFunc) Check(ctx context.Context, addr netip.AddrPort) Result { return f(ctx, addr) }

// NewChecker returns the checker for hc.Type. It reads the TLS and
// credential files named in hc.TLS (tls and https only), so a bad file
// fails at start, not per probe.
//
// A credential file that does not exist yet is the exception: halb is
// often started before the cluster whose credentials the check names (a
// Talos cluster bootstrapped behind the VIP). The check then reports
// itself rejected for credentials, naming the file, so panic routing keeps
// the endpoint up and status says what to do. Every probe also looks at
// the files (a stat each) and reads them again when one appeared or
// changed, so a renewed certificate or a new talosconfig needs no reload.
func NewChecker(hc config.HealthCheck) (Checker, error) {
	c, err := newChecker(hc)
	files := credentialFiles(hc)
	if len(files) == 0 {
		return c, err
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return &fileChecker{hc: hc, files: files, stamp: stampOf(files), c: c, err: err}, nil
}

// credentialFiles lists the files a tls or https check reads. Files that
// a kubeconfig names inside it are read again when the kubeconfig changes.
func credentialFiles(hc config.HealthCheck) []string {
	if hc.Type != config.CheckTLS && hc.Type != config.CheckHTTPS {
		return nil
	}
	o := hc.TLS
	var out []string
	for _, f := range []string{o.CAFile, o.CertFile, o.KeyFile, o.Talosconfig, o.Kubeconfig} {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// stampOf identifies the current version of files: identity, size and
// modification time of each, or that it is missing.
func stampOf(files []string) string {
	var b strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			b.WriteString("missing\x00")
			continue
		}
		ino := uint64(0)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%d:%d:%d\x00", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// fileChecker is a check with credential files: it builds its checker
// from them, again whenever they change, and stands in for it with a
// rejected result while they cannot be loaded.
type fileChecker struct {
	hc    config.HealthCheck
	files []string
	mu    sync.Mutex
	stamp string  // the files' version c or err came from
	c     Checker // nil while err
	err   error
}

func (f *fileChecker) Check(ctx context.Context, addr netip.AddrPort) Result {
	start := time.Now()
	f.mu.Lock()
	if st := stampOf(f.files); st != f.stamp {
		f.stamp = st
		f.c, f.err = newChecker(f.hc)
	}
	c, err := f.c, f.err
	f.mu.Unlock()
	if c != nil {
		return c.Check(ctx, addr)
	}
	return Result{OK: false, Failure: Rejected, At: start, Latency: max(time.Since(start), time.Nanosecond),
		Reason: "credentials not loaded: " + err.Error() + ": fix the file (see " + DocCheckCredentials + "); the check reads it again once it changes"}
}

func newChecker(hc config.HealthCheck) (Checker, error) {
	switch hc.Type {
	case config.CheckTCP:
		return tcpChecker{}, nil
	case config.CheckTLS:
		cr, err := loadCredentials(hc)
		if err != nil {
			return nil, err
		}
		return &tlsChecker{cr: cr}, nil
	case config.CheckHTTP, config.CheckHTTPS:
		c, err := newHTTPChecker(hc)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return c, nil
	default:
		return nil, fmt.Errorf("unknown health check type %q", hc.Type)
	}
}

// configFor returns cfg ready for addr: a verifying check without a
// configured server name verifies the certificate against the IP.
func configFor(cfg *tls.Config, addr netip.AddrPort) *tls.Config {
	if cfg.InsecureSkipVerify || cfg.ServerName != "" {
		return cfg
	}
	c := cfg.Clone()
	c.ServerName = addr.Addr().WithZone("").Unmap().String()
	return c
}

// probe times one check and turns its outcome into a Result.
type probe struct {
	start  time.Time
	budget time.Duration // the ctx deadline as seen at start; 0 if none
}

func begin(ctx context.Context) probe {
	p := probe{start: time.Now()}
	if dl, ok := ctx.Deadline(); ok {
		// Rounded so that "timeout after 1s" reads as configured even though
		// the deadline was set a few microseconds before the check started.
		p.budget = max(dl.Sub(p.start).Round(time.Millisecond), 0)
	}
	return p
}

func (p probe) ok(reason string) Result {
	return Result{OK: true, Reason: reason, Latency: time.Since(p.start), At: p.start}
}

func (p probe) failed(reason string) Result {
	return Result{OK: false, Reason: reason, Latency: time.Since(p.start), At: p.start}
}

// fail turns err into a failed Result: its reason, with what to do about it
// when the server rejected the check, and its kind. cr is nil for checks
// without credentials.
func (p probe) fail(err error, cr *credentials) Result {
	elapsed := time.Since(p.start)
	budget := p.budget
	if budget == 0 {
		budget = elapsed.Round(time.Millisecond)
	}
	reason := describe(err, budget)
	kind, hint := diagnose(err, cr)
	if hint != "" {
		reason += ": " + hint
	}
	return Result{OK: false, Reason: reason, Failure: kind, Latency: elapsed, At: p.start, Inconclusive: LocalExhaustion(err), TimedOut: timedOut(err)}
}

// handshakeError marks a failure of the TLS handshake, after the TCP
// connect succeeded.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// timedOut reports whether err means nothing answered in time.
func timedOut(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &te) && te.Timeout())
}

// describe turns a probe error into a short reason for operators: the
// address is logged elsewhere, so only what went wrong is kept.
func describe(err error, timeout time.Duration) string {
	if hs, ok := errors.AsType[*handshakeError](err); ok {
		s := describe(hs.err, timeout)
		if !strings.HasPrefix(s, "tls handshake: ") {
			s = "tls handshake: " + s
		}
		return s
	}
	switch {
	case timedOut(err):
		return "timeout after " + timeout.String()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by server"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Err != nil {
		if oe.Op == "remote error" {
			// The server rejected us with a TLS alert, possibly after our
			// side of the handshake had completed (TLS 1.3 client certs).
			return "tls handshake: " + oe.Error()
		}
		return oe.Err.Error()
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err.Error()
	}
	return err.Error()
}

// tcpChecker connects and closes.
type tcpChecker struct{}

func (tcpChecker) Check(ctx context.Context, addr netip.AddrPort) Result {
	p := begin(ctx)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return p.fail(err, nil)
	}
	res := p.ok("connected")
	_ = conn.Close()
	return res
}

// tlsChecker completes a TLS handshake and closes with close_notify.
type tlsChecker struct{ cr *credentials }

func (c *tlsChecker) Check(ctx context.Context, addr netip.AddrPort) Result {
	p := begin(ctx)
	conn, err := dialTLS(ctx, addr, configFor(c.cr.tls, addr))
	if err != nil {
		return p.fail(err, c.cr)
	}
	res := p.ok("handshake ok (" + tls.VersionName(conn.ConnectionState().Version) + ")")
	if err := closeTLS(ctx, conn); err != nil {
		return p.fail(err, c.cr)
	}
	return res
}

// dialTLS connects to addr and completes a client handshake within ctx.
func dialTLS(ctx context.Context, addr netip.AddrPort, cfg *tls.Config) (*tls.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, &handshakeError{err: err}
	}
	return conn, nil
}

// closeTLS ends a checked connection the way a polite client does:
// close_notify, then FIN, then a short wait for the server's own close.
// Reading until then consumes data such as TLS 1.3 session tickets, whose
// presence unread would turn our close into a reset, and it reveals a
// server that rejects us after our side of the handshake completed (a TLS
// 1.3 server checks the client certificate only then). Only such a
// rejection is returned; a server that stays silent is fine.
func closeTLS(ctx context.Context, conn *tls.Conn) error {
	defer func() { _ = conn.Close() }()
	// A failed write is not conclusive: the server's alert may be waiting.
	_ = conn.CloseWrite()
	if tc, ok := conn.NetConn().(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	deadline := time.Now().Add(closeWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 1024)
	for range maxCloseReads {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
			return err
		}
		return nil
	}
	return nil
}

// httpChecker sends GET path and judges the status code.
type httpChecker struct {
	scheme string
	path   *url.URL     // path and query only
	host   string       // Host header and URL host; "" means the address
	want   []int        // accepted codes; empty means 200-399
	cr     *credentials // https only
}

func newHTTPChecker(hc config.HealthCheck) (*httpChecker, error) {
	path := hc.Path
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("parse health check path %q: %w", hc.Path, err)
	}
	if u.Scheme != "" || u.Host != "" {
		return nil, fmt.Errorf("parse health check path %q: want a path, not a URL", hc.Path)
	}
	c := &httpChecker{scheme: "http", path: u, want: slices.Clone(hc.ExpectStatus)}
	if hc.Type == config.CheckHTTPS {
		c.scheme = "https"
		c.host = hc.TLS.ServerName
		if c.cr, err = loadCredentials(hc); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *httpChecker) Check(ctx context.Context, addr netip.AddrPort) Result {
	p := begin(ctx)
	u := *c.path
	u.Scheme = c.scheme
	u.Host = c.host
	if u.Host == "" {
		u.Host = addr.String()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return p.failed("build request: " + err.Error())
	}
	req.Header.Set("User-Agent", "halb-health-check")
	if c.cr != nil && c.cr.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cr.token)
	}
	// A fresh transport without keep-alives: every probe is a new
	// connection, as a client after a failover would make. Dials ignore the
	// URL host, which may be a server name that does not resolve.
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr.String())
		},
		MaxResponseHeaderBytes: 64 << 10,
	}
	if c.cr != nil {
		cfg := configFor(c.cr.tls, addr)
		tr.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTLS(ctx, addr, cfg)
		}
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is an answer; following it would probe another server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return p.fail(err, c.cr)
	}
	latency := time.Since(p.start)
	_, _ = io.CopyN(io.Discard, resp.Body, maxBody)
	_ = resp.Body.Close()
	res := Result{OK: c.accepts(resp.StatusCode), Latency: latency, At: p.start}
	if res.OK {
		res.Reason = resp.Status
		if res.Reason == "" {
			res.Reason = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		}
	} else if kind, hint := statusVerdict(resp.StatusCode, c.cr); kind == Rejected {
		res.Failure = kind
		res.Reason = fmt.Sprintf("%d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), hint)
	} else {
		// The server answered and says no: it is up but should not get
		// new connections, like a kube-apiserver shutting down.
		res.Failure = NotReady
		res.Reason = fmt.Sprintf("status %d, want %s", resp.StatusCode, c.wantText())
	}
	return res
}

func (c *httpChecker) accepts(code int) bool {
	if len(c.want) == 0 {
		return code >= 200 && code < 400
	}
	return slices.Contains(c.want, code)
}

func (c *httpChecker) wantText() string {
	if len(c.want) == 0 {
		return "200-399"
	}
	s := make([]string, len(c.want))
	for i, w := range c.want {
		s[i] = strconv.Itoa(w)
	}
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
