package fakecp

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cp is a running fake control plane under test.
type cp struct {
	s          *Server
	c          *Client
	pki        string // "" without credentials
	api, talos netip.AddrPort
}

// start runs a fake control plane on ip with kernel-chosen ports; withPKI
// gives it a fresh PKI, as the lab does.
func start(t *testing.T, ip string, withPKI bool) *cp {
	t.Helper()
	f := &cp{}
	if withPKI {
		f.pki = filepath.Join(t.TempDir(), "pki")
		if err := WritePKI(f.pki, netip.MustParseAddr("127.0.0.1"), []netip.Addr{netip.MustParseAddr(ip)}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "cp.sock")
	a := netip.MustParseAddrPort(ip + ":0")
	f.s = New(Options{Name: "cp1", HTTPS: []netip.AddrPort{a}, TLS: []netip.AddrPort{a}, ControlSocket: sock, PKIDir: f.pki},
		slog.New(slog.DiscardHandler))
	support.Go(t, f.s.Run).AwaitReady(t, f.s.Ready(), 5*time.Second)
	https, tlsAddrs := f.s.Addrs()
	f.c, f.api, f.talos = NewClient(sock), https[0], tlsAddrs[0]
	return f
}

// client is an HTTPS client presenting id's certificate (none if ""),
// verifying the server against the kubernetes CA, from source IP from
// ("" for the default).
func (f *cp) client(t *testing.T, id Identity, from string) *http.Client {
	t.Helper()
	conf := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only without a PKI
	if f.pki != "" {
		var err error
		if id == "" {
			conf, err = ClientTLS(f.pki, KubeHealth)
			conf.Certificates = nil
		} else {
			conf, err = ClientTLS(f.pki, id)
		}
		if err != nil {
			t.Fatal(err)
		}
		// A Talos identity is verified by the OS CA; the API server's
		// certificate comes from the kubernetes CA.
		conf.RootCAs, conf.MinVersion = mustPool(t, f.pki, K8sCACert), tls.VersionTLS12
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	tr := &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true, DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

func mustPool(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	p, err := loadPool(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type response struct {
	code       int
	name, body string
}

func do(t *testing.T, hc *http.Client, addr netip.AddrPort, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr.String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return response{resp.StatusCode, resp.Header.Get(NameHeader), string(b)}
}

// waitStatus polls the control API until cond holds (at most 5 s).
func waitStatus(t *testing.T, c *Client, what string, cond func(Status) bool) Status {
	t.Helper()
	var st Status
	var err error
	if !support.Eventually(5*time.Second, func() bool {
		st, err = c.Status(context.Background())
		return err == nil && cond(st)
	}) {
		t.Fatalf("waiting for %s: status %+v, %v", what, st, err)
	}
	return st
}

const unauthorizedBody = `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}` + "\n"

func TestAnonymousGets401(t *testing.T) {
	f := start(t, "127.0.0.21", true)
	anon := f.client(t, "", "127.0.0.121")
	for _, p := range []string{"/readyz", "/healthz", "/livez", "/version"} {
		if r := do(t, anon, f.api, p); r.code != 401 || r.body != unauthorizedBody {
			t.Errorf("anonymous GET %s = %d %q, want 401 %q", p, r.code, r.body, unauthorizedBody)
		}
	}
	// A certificate kube-apiserver does not trust is not a failed
	// handshake: the authenticator rejects it with 401.
	wrong := f.client(t, TalosAdmin, "127.0.0.122")
	if r := do(t, wrong, f.api, "/readyz"); r.code != 401 {
		t.Errorf("GET /readyz with a Talos certificate = %d, want 401", r.code)
	}
	st, err := f.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.API.Unauthorized["127.0.0.121"] != 4 || st.API.Unauthorized["127.0.0.122"] != 1 || len(st.API.HandshakeFailures) != 0 {
		t.Errorf("api counters = %+v, want 4 and 1 unauthorized by source, no handshake failures", st.API)
	}
}

func TestHealthUserReadsHealthOnly(t *testing.T) {
	f := start(t, "127.0.0.22", true)
	hc := f.client(t, KubeHealth, "")
	for _, p := range []string{"/readyz", "/healthz", "/livez"} {
		if r := do(t, hc, f.api, p); r.code != 200 || r.body != "ok" || r.name != "cp1" {
			t.Errorf("health user GET %s = %d %q %q, want 200 ok from cp1", p, r.code, r.body, r.name)
		}
	}
	r := do(t, hc, f.api, "/version")
	want := `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"halb-health\" cannot get path \"/version\"","reason":"Forbidden","details":{},"code":403}` + "\n"
	if r.code != 403 || r.body != want {
		t.Errorf("health user GET /version = %d %q, want 403 %q", r.code, r.body, want)
	}
	st, _ := f.c.Status(context.Background())
	if st.API.Forbidden["127.0.0.1"] != 1 || st.API.Authenticated["127.0.0.1"] != 4 || len(st.API.Unauthorized) != 0 {
		t.Errorf("api counters = %+v, want 1 forbidden, 4 authenticated", st.API)
	}
}

func TestAdminGetsEverything(t *testing.T) {
	f := start(t, "127.0.0.23", true)
	hc := f.client(t, KubeAdmin, "")
	if r := do(t, hc, f.api, "/version"); r.code != 200 || r.name != "cp1" || r.body != "ok cp1\n" {
		t.Errorf("admin GET /version = %d %q %q, want 200 cp1 \"ok cp1\\n\"", r.code, r.name, r.body)
	}
	if r := do(t, hc, f.api, "/readyz"); r.code != 200 || r.body != "ok" {
		t.Errorf("admin GET /readyz = %d %q, want 200 ok", r.code, r.body)
	}
}

func TestBearerToken(t *testing.T) {
	f := start(t, "127.0.0.24", true)
	tok, err := os.ReadFile(filepath.Join(f.pki, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	hc := f.client(t, "", "")
	bearer := "Bearer " + strings.TrimSpace(string(tok))
	if r := do(t, hc, f.api, "/readyz", "Authorization", bearer); r.code != 200 || r.body != "ok" {
		t.Errorf("GET /readyz with the token = %d %q, want 200 ok", r.code, r.body)
	}
	if r := do(t, hc, f.api, "/version", "Authorization", bearer); r.code != 403 || !strings.Contains(r.body, `User \"halb-token\"`) {
		t.Errorf("GET /version with the token = %d %q, want 403 naming halb-token", r.code, r.body)
	}
	if r := do(t, hc, f.api, "/readyz", "Authorization", "Bearer nope"); r.code != 401 {
		t.Errorf("GET /readyz with a wrong token = %d, want 401", r.code)
	}
}

func TestVerboseAndFailHealth(t *testing.T) {
	f := start(t, "127.0.0.25", true)
	hc := f.client(t, KubeHealth, "")
	r := do(t, hc, f.api, "/readyz?verbose")
	if r.code != 200 || !strings.HasPrefix(r.body, "[+]ping ok\n[+]log ok\n[+]etcd ok\n") ||
		!strings.Contains(r.body, "[+]shutdown ok\n") || !strings.HasSuffix(r.body, "readyz check passed\n") {
		t.Errorf("GET /readyz?verbose = %d %q", r.code, r.body)
	}
	if r := do(t, hc, f.api, "/livez?verbose"); strings.Contains(r.body, "shutdown") || !strings.HasSuffix(r.body, "livez check passed\n") {
		t.Errorf("GET /livez?verbose = %q, want no shutdown check", r.body)
	}
	if err := f.c.FailHealth(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/healthz", "/readyz", "/livez"} {
		r := do(t, hc, f.api, p)
		if r.code != 500 || !strings.Contains(r.body, "[-]etcd failed: reason withheld\n") || !strings.Contains(r.body, p[1:]+" check failed") {
			t.Errorf("GET %s with fail-health = %d %q, want 500 listing the failed etcd check", p, r.code, r.body)
		}
	}
	if r := do(t, f.client(t, KubeAdmin, ""), f.api, "/version"); r.code != 200 {
		t.Errorf("GET /version with fail-health = %d, want 200", r.code)
	}
	if err := f.c.FailHealth(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r := do(t, hc, f.api, "/healthz"); r.code != 200 {
		t.Errorf("GET /healthz after fail-health off = %d, want 200", r.code)
	}
}

// watch opens a watch as admin and returns its line reader.
func watch(t *testing.T, f *cp) (*bufio.Reader, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+f.api.String()+"/api/v1/pods?watch=1", nil)
	hc := f.client(t, KubeAdmin, "")
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		cancel()
		t.Fatalf("watch: %v %+v, want 200 chunked", err, resp)
	}
	return bufio.NewReader(resp.Body), func() { cancel(); _ = resp.Body.Close() }
}

func TestWatchStreams(t *testing.T) {
	f := start(t, "127.0.0.26", true)
	br, stop := watch(t, f)
	defer stop()
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || !strings.Contains(line, `"name":"cp1"`) {
			t.Fatalf("watch line %d = %q, %v", i, line, err)
		}
	}
	if r := do(t, f.client(t, KubeHealth, ""), f.api, "/api/v1/pods?watch=true"); r.code != 403 {
		t.Errorf("health user watch = %d, want 403", r.code)
	}
}

// talosDial connects to the Talos port with id's certificate (none if ""),
// offering ALPN protos, from source IP from.
func talosDial(t *testing.T, f *cp, id Identity, from string, protos ...string) (*tls.Conn, error) {
	t.Helper()
	c, _, err := talosDialSpy(t, f, id, from, protos...)
	return c, err
}

// recordSpy follows the TLS records a client reads, so a test can see
// whether the last one was a close_notify alert. In TLS 1.3 alerts are
// encrypted, but a close_notify has a length of its own: 2 bytes of
// alert, 1 of content type and a 16-byte AEAD tag.
type recordSpy struct {
	net.Conn
	hdr     []byte // the current record's header, while incomplete
	left    int    // bytes of the current record's body still to come
	lastLen int    // body length of the last record read
}

const closeNotifyLen = 2 + 1 + 16

func (c *recordSpy) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	for p := b[:n]; len(p) > 0; {
		if c.left > 0 {
			k := min(c.left, len(p))
			c.left -= k
			p = p[k:]
			continue
		}
		k := min(5-len(c.hdr), len(p))
		c.hdr = append(c.hdr, p[:k]...)
		p = p[k:]
		if len(c.hdr) == 5 {
			c.left = int(c.hdr[3])<<8 | int(c.hdr[4])
			c.lastLen = c.left
			c.hdr = c.hdr[:0]
		}
	}
	return n, err
}

func talosDialSpy(t *testing.T, f *cp, id Identity, from string, protos ...string) (*tls.Conn, *recordSpy, error) {
	t.Helper()
	conf := &tls.Config{RootCAs: mustPool(t, f.pki, OSCACert), NextProtos: protos, ServerName: f.talos.Addr().String()}
	if id != "" {
		c, err := ClientTLS(f.pki, id)
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = c.Certificates
	}
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", f.talos.String())
	if err != nil {
		return nil, nil, err
	}
	spy := &recordSpy{Conn: raw}
	tc := tls.Client(spy, conf)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, spy, nil
}

func TestTalosPortNeedsOSCertificate(t *testing.T) {
	f := start(t, "127.0.0.27", true)
	// TLS 1.3 finishes the client's handshake before the server has
	// checked its certificate, so a rejection shows on the first read.
	for _, tc := range []struct {
		id   Identity
		from string
	}{{"", "127.0.0.127"}, {KubeAdmin, "127.0.0.128"}} {
		conn, err := talosDial(t, f, tc.id, tc.from)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = io.ReadAll(conn)
			_ = conn.Close()
		}
		if err == nil {
			t.Errorf("Talos port with identity %q: read succeeded, want a TLS rejection", tc.id)
		}
	}
	conn, err := talosDial(t, f, TalosReader, "127.0.0.129")
	if err != nil {
		t.Fatalf("dial with the reader certificate: %v", err)
	}
	b, err := io.ReadAll(conn)
	_ = conn.Close()
	if err != nil || string(b) != "cp1\n" {
		t.Fatalf("Talos port said %q, %v; want \"cp1\\n\"", b, err)
	}
	if conn.ConnectionState().Version != tls.VersionTLS13 {
		t.Errorf("Talos port negotiated %s, want TLS 1.3", tls.VersionName(conn.ConnectionState().Version))
	}
	conf := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12} //nolint:gosec // testing the version only
	if c, err := tls.Dial("tcp", f.talos.String(), conf); err == nil {
		_ = c.Close()
		t.Error("Talos port accepted TLS 1.2")
	}
	st := waitStatus(t, f.c, "two rejected handshakes", func(st Status) bool {
		return st.Talos.HandshakeFailures["127.0.0.127"] == 1 && st.Talos.HandshakeFailures["127.0.0.128"] == 1
	})
	if st.Talos.Authenticated["127.0.0.129"] != 1 || st.Talos.HandshakeFailures["127.0.0.129"] != 0 {
		t.Errorf("talos counters = %+v, want the reader authenticated and not failed", st.Talos)
	}
}

func TestTCPCheckIsNotAFailedHandshake(t *testing.T) {
	f := start(t, "127.0.0.28", true)
	d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.130")}}
	for _, a := range []netip.AddrPort{f.api, f.talos} {
		c, err := d.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	st := waitStatus(t, f.c, "two closed connections", func(st Status) bool {
		return st.API.ClosedBeforeHello["127.0.0.130"] == 1 && st.Talos.ClosedBeforeHello["127.0.0.130"] == 1
	})
	if len(st.API.HandshakeFailures)+len(st.Talos.HandshakeFailures) != 0 {
		t.Errorf("status = %+v, want no handshake failures for a plain TCP check", st)
	}
}

// A TLS check that hangs up right after its handshake (HAProxy's
// check-ssl) may fail the server's side as it sends session tickets; that
// is not a refused handshake.
func TestHangUpAfterHandshakeIsNotAFailure(t *testing.T) {
	f := start(t, "127.0.0.36", true)
	const n = 20
	for range n {
		conn, err := talosDial(t, f, TalosReader, "127.0.0.136")
		if err != nil {
			t.Fatal(err)
		}
		// A reset, with nothing read, no close_notify.
		_ = conn.NetConn().(*recordSpy).Conn.(*net.TCPConn).SetLinger(0)
		_ = conn.NetConn().Close()
	}
	st := waitStatus(t, f.c, "every connection accounted for", func(st Status) bool {
		return st.Talos.Authenticated["127.0.0.136"]+st.Talos.ClosedAfterHandshake["127.0.0.136"] == n
	})
	if len(st.Talos.HandshakeFailures) != 0 {
		t.Errorf("talos counters = %+v, want no handshake failures", st.Talos)
	}
}

func TestClassifyHandshakeError(t *testing.T) {
	for _, tc := range []struct {
		read         int64
		clientFlight bool
		want         event
	}{
		{0, false, evClosedBeforeHello},
		{517, false, evHandshakeFailure},     // a ClientHello, then a refusal or a hang-up
		{1200, true, evClosedAfterHandshake}, // certificate accepted, then gone
		{0, true, evClosedBeforeHello},       // cannot happen; nothing read wins
	} {
		if got := classifyHandshakeError(tc.read, tc.clientFlight); got != tc.want {
			t.Errorf("classifyHandshakeError(%d, %v) = %s, want %s", tc.read, tc.clientFlight, got, tc.want)
		}
	}
}

func TestTalosH2Stream(t *testing.T) {
	f := start(t, "127.0.0.29", true)
	conn, err := talosDial(t, f, TalosReader, "127.0.0.29", "h2")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN = %q, want h2", p)
	}
	br := bufio.NewReader(conn)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if want := "cp1 tick " + string(rune('0'+i)) + "\n"; err != nil || line != want {
			t.Fatalf("stream line %d = %q, %v; want %q", i, line, err, want)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	f := start(t, "127.0.0.30", true)
	ctx := context.Background()
	hc := f.client(t, KubeHealth, "")
	admin := f.client(t, KubeAdmin, "")
	br, stop := watch(t, f)
	defer stop()
	stream, spy, err := talosDialSpy(t, f, TalosReader, "127.0.0.30", "h2")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stream.Close() }()

	if err := f.c.Shutdown(ctx, 700*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r := do(t, hc, f.api, "/readyz")
	if r.code != 500 || !strings.Contains(r.body, "[-]shutdown failed: reason withheld\n") {
		t.Errorf("GET /readyz while stopping = %d %q, want 500 with [-]shutdown failed", r.code, r.body)
	}
	if r := do(t, hc, f.api, "/livez"); r.code != 200 {
		t.Errorf("GET /livez while stopping = %d, want 200", r.code)
	}
	if r := do(t, admin, f.api, "/version"); r.code != 200 {
		t.Errorf("new request while stopping = %d, want 200", r.code)
	}
	if st, _ := f.c.Status(ctx); st.State != Stopping {
		t.Errorf("state while stopping = %s, want %s", st.State, Stopping)
	}
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "cp1") {
		t.Errorf("watch while stopping: %q, %v", line, err)
	}

	// After the delay the watch's chunked body ends properly (io.EOF, not
	// io.ErrUnexpectedEOF) and the Talos stream ends with close_notify.
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("watch ended with %v, want a clean end of the body", err)
	}
	_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(stream)
	if err != nil || spy.lastLen != closeNotifyLen {
		t.Errorf("Talos stream ended with %v after a record of %d bytes, want close_notify (%d)", err, spy.lastLen, closeNotifyLen)
	}
	if !strings.HasSuffix(string(rest), "\nEND cp1\n") {
		t.Errorf("Talos stream ended with %q, want a last line END cp1 (the server's own end of the stream)", rest)
	}
	waitStatus(t, f.c, "stopped", func(st Status) bool { return st.State == Stopped })
	if _, err := net.DialTimeout("tcp", f.api.String(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after shutdown: %v, want refused", err)
	}
	if err := f.c.SetState(ctx, Serving); err != nil {
		t.Fatal(err)
	}
	if r := do(t, hc, f.api, "/readyz"); r.code != 200 {
		t.Errorf("GET /readyz after start = %d, want 200", r.code)
	}
}

func TestStopRefusesAndStartComesBack(t *testing.T) {
	f := start(t, "127.0.0.31", true)
	ctx := context.Background()
	if err := f.c.SetState(ctx, Stopped); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.AddrPort{f.api, f.talos} {
		_, err := net.DialTimeout("tcp", a.String(), time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s when stopped: %v, want connection refused", a, err)
		}
	}
	if err := f.c.SetState(ctx, Serving); err != nil {
		t.Fatal(err)
	}
	if r := do(t, f.client(t, KubeHealth, ""), f.api, "/healthz"); r.code != 200 {
		t.Errorf("GET /healthz after start = %d, want 200 on the same port", r.code)
	}
}

func TestBlackholeAcceptsButNeverAnswers(t *testing.T) {
	f := start(t, "127.0.0.32", true)
	if err := f.c.SetState(context.Background(), Blackhole); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", f.api.String(), time.Second)
	if err != nil {
		t.Fatalf("dial in blackhole: %v, want connected", err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	err = tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake() //nolint:gosec // test cert
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("handshake in blackhole: %v, want timeout", err)
	}
	if err := f.c.SetState(context.Background(), Serving); err != nil {
		t.Fatal(err)
	}
	if r := do(t, f.client(t, KubeHealth, ""), f.api, "/healthz"); r.code != 200 {
		t.Errorf("GET /healthz after blackhole = %d, want 200", r.code)
	}
}

// Without a PKI the fake answers anyone, as it did before credentials.
func TestWithoutPKIAnswersAnyone(t *testing.T) {
	f := start(t, "127.0.0.33", false)
	if r := do(t, f.client(t, "", ""), f.api, "/healthz"); r.code != 200 || r.name != "cp1" {
		t.Errorf("GET /healthz = %d %q, want 200 from cp1", r.code, r.name)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", f.talos.String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test cert
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	b, err := io.ReadAll(conn)
	_ = conn.Close()
	if err != nil || string(b) != "cp1\n" {
		t.Fatalf("talos port said %q, %v; want \"cp1\\n\"", b, err)
	}
}

func TestBadControlCommand(t *testing.T) {
	f := start(t, "127.0.0.34", false)
	for _, p := range []string{"/fail-health/maybe", "/shutdown?delay=soon"} {
		if err := f.c.post(context.Background(), p); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("%s: %v, want 400", p, err)
		}
	}
}

func TestBindErrorIsReturned(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.35:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	taken := netip.MustParseAddrPort(ln.Addr().String())
	s := New(Options{Name: "cp1", HTTPS: []netip.AddrPort{taken}}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a taken port: %v, want listen error", err)
	}
}
