package stats

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"halb/internal/config"
)

// testPair is a self-signed certificate for 127.0.0.1 and its key, PEM.
type testPair struct {
	cert     *x509.Certificate
	certPEM  []byte
	keyPEM   []byte
	notAfter time.Time
}

func newTestPair(t *testing.T, cn string, notAfter time.Time) testPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
		IPAddresses:  []net.IP{{127, 0, 0, 1}},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testPair{
		cert:     cert,
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		notAfter: notAfter,
	}
}

// write puts the pair's files at files, stamped at mod so a change is
// seen whatever the file system's time resolution.
func (p testPair) write(t *testing.T, files config.StatsTLS, mod time.Time) {
	t.Helper()
	for path, b := range map[string][]byte{files.CertFile: p.certPEM, files.KeyFile: p.keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

func tlsFiles(t *testing.T) config.StatsTLS {
	dir := t.TempDir()
	return config.StatsTLS{CertFile: filepath.Join(dir, "stats.crt"), KeyFile: filepath.Join(dir, "stats.key")}
}

// peerCert connects to addr with TLS and returns the certificate the
// server presented, or the handshake's error.
func peerCert(addr netip.AddrPort, maxVersion uint16) (*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: maxVersion}) //nolint:gosec // the test compares the certificate itself
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func TestHTTPSDashboardAndRotation(t *testing.T) {
	files := tlsFiles(t)
	first := newTestPair(t, "first", time.Now().Add(24*time.Hour))
	t0 := time.Now().Add(-time.Hour)
	first.write(t, files, t0)
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.TLS = &files
	rec := &logRecorder{}
	s, err := New(cfg, &fakeSource{snap: healthyPair(time.Now())}, nil, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)

	// A real client that trusts the certificate gets the status page.
	roots := x509.NewCertPool()
	roots.AddCert(first.cert)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://"+s.Addr().String()+"/status.json", nil)
	req.SetBasicAuth("admin", "s3cret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET over HTTPS: status %d, TLS %+v", resp.StatusCode, resp.TLS)
	}
	if _, err := peerCert(s.Addr(), tls.VersionTLS11); err == nil {
		t.Error("a TLS 1.1 client was served, want TLS 1.2 or later only")
	}

	// The files are replaced: the next handshake presents the new one.
	second := newTestPair(t, "second", time.Now().Add(48*time.Hour))
	second.write(t, files, t0.Add(time.Minute))
	got, err := peerCert(s.Addr(), 0)
	if err != nil || got.Subject.CommonName != "second" {
		t.Fatalf("after rotation: %v, %v; want the second certificate", got, err)
	}

	// A broken replacement (a key of another pair) keeps the second one
	// in service, and says why once.
	third := newTestPair(t, "third", time.Now().Add(72*time.Hour))
	bad := testPair{certPEM: third.certPEM, keyPEM: first.keyPEM}
	bad.write(t, files, t0.Add(2*time.Minute))
	for range 3 {
		got, err = peerCert(s.Addr(), 0)
		if err != nil || got.Subject.CommonName != "second" {
			t.Fatalf("after a broken replacement: %v, %v; want the second certificate still", got, err)
		}
	}
	if n := rec.count("does not load: still serving the previous one"); n != 1 {
		t.Errorf("the broken replacement was logged %d times, want once", n)
	}
	// Its key arriving afterwards completes it.
	third.write(t, files, t0.Add(3*time.Minute))
	if got, err = peerCert(s.Addr(), 0); err != nil || got.Subject.CommonName != "third" {
		t.Fatalf("after the key followed: %v, %v; want the third certificate", got, err)
	}
}

func TestBadPairRefusedAtStart(t *testing.T) {
	files := tlsFiles(t)
	a, b := newTestPair(t, "a", time.Now().Add(time.Hour)), newTestPair(t, "b", time.Now().Add(time.Hour))
	mixed := testPair{certPEM: a.certPEM, keyPEM: b.keyPEM}
	mixed.write(t, files, time.Now())
	cfg := statsConfig(t)
	cfg.TLS = &files
	_, err := New(cfg, &fakeSource{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "stats.tls") || !strings.Contains(err.Error(), files.CertFile) || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("mismatched pair: %v, want an error naming stats.tls, the files and the mismatch", err)
	}

	missing := config.StatsTLS{CertFile: filepath.Join(t.TempDir(), "absent.crt"), KeyFile: files.KeyFile}
	cfg.TLS = &missing
	_, err = New(cfg, &fakeSource{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "stats.tls.cert_file") || !strings.Contains(err.Error(), "absent.crt") {
		t.Fatalf("missing certificate: %v, want an error naming stats.tls.cert_file and the file", err)
	}
}

func TestExpiryWarning(t *testing.T) {
	files := config.StatsTLS{CertFile: "/etc/halb/stats.crt"}
	now := time.Now()
	p := newTestPair(t, "x", now.Add(time.Hour))
	cert := &tls.Certificate{Leaf: p.cert}
	if w := ExpiryWarning(files, cert, now); w != "" {
		t.Errorf("valid certificate: %q, want no warning", w)
	}
	if w := ExpiryWarning(files, cert, now.Add(2*time.Hour)); !strings.Contains(w, "expired") || !strings.Contains(w, files.CertFile) {
		t.Errorf("expired certificate: %q", w)
	}
	if w := ExpiryWarning(files, cert, now.Add(-72*time.Hour)); !strings.Contains(w, "not valid before") {
		t.Errorf("future certificate: %q", w)
	}
}

// logRecorder keeps the messages logged, for counting.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *logRecorder) count(part string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, part) {
			n++
		}
	}
	return n
}
