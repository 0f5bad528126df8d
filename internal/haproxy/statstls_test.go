package haproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"halb/internal/stats"
)

// combinedPEM writes what HAProxy's `crt` takes: one file with the
// certificate, then its private key.
func combinedPEM(t *testing.T, cn string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	path := filepath.Join(t.TempDir(), "stats.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const statsTCPPair = "frontend fe\n  bind 10.1.1.10:6443\n  default_backend be\nbackend be\n  server s1 10.1.1.1:6443 check\n"

// A stats page served over HTTPS by HAProxy stays HTTPS under halb: its
// crt file becomes stats.tls, and halb's stats listener loads it.
func TestStatsPageTLSFromBindCrt(t *testing.T) {
	pemFile := combinedPEM(t, "lb.example")
	cfg := "listen stats\n  bind 10.1.1.10:9600 ssl crt " + pemFile + "\n  mode http\n  stats enable\n" + statsTCPPair
	c, ws, out := importText(t, cfg, Options{})
	if c.Stats == nil || c.Stats.TLS == nil {
		t.Fatalf("no stats.tls imported:\n%s", out)
	}
	if c.Stats.TLS.CertFile != pemFile || c.Stats.TLS.KeyFile != pemFile {
		t.Errorf("stats.tls = %+v, want cert_file and key_file %s", *c.Stats.TLS, pemFile)
	}
	cert, err := stats.LoadKeyPair(*c.Stats.TLS)
	if err != nil {
		t.Fatalf("halb cannot load the imported stats.tls: %v", err)
	}
	if cert.Leaf.Subject.CommonName != "lb.example" {
		t.Errorf("loaded certificate %q, want lb.example", cert.Leaf.Subject.CommonName)
	}
	if !warningAt(ws, 2, "check that "+pemFile+" is one file holding the certificate and its key") ||
		!warningAt(ws, 2, "user halb can read it") {
		t.Errorf("no warning asking to confirm the PEM file and its owner at line 2: %v", ws)
	}
}

func TestStatsPageTLSNotImported(t *testing.T) {
	tests := []struct{ name, bind, want string }{
		{"ssl without crt", "bind 10.1.1.10:9600 ssl", "no crt on the bind line"},
		{"crt-list", "bind 10.1.1.10:9600 ssl crt-list /etc/haproxy/certs.lst", "takes one certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := "listen stats\n  " + tt.bind + "\n  mode http\n  stats enable\n" + statsTCPPair
			c, ws, out := importText(t, cfg, Options{})
			if c.Stats == nil || c.Stats.TLS != nil {
				t.Fatalf("want a stats section without tls:\n%s", out)
			}
			if !warningAt(ws, 2, tt.want) || !warningAt(ws, 2, "plain HTTP") {
				t.Errorf("no warning %q at line 2: %v", tt.want, ws)
			}
		})
	}
	// A plain bind stays plain, without a word about TLS.
	c, ws, _ := importText(t, "listen stats\n  bind 10.1.1.10:9600\n  mode http\n  stats enable\n"+statsTCPPair, Options{})
	if c.Stats == nil || c.Stats.TLS != nil {
		t.Errorf("plain stats page: tls %+v", c.Stats)
	}
	for _, w := range ws {
		if strings.Contains(w.Format("f"), "stats.tls") {
			t.Errorf("plain stats page warned about TLS: %s", w.Format("f"))
		}
	}
}

// Several crt options: HAProxy picks by SNI, halb serves the first.
func TestStatsPageTLSFirstOfSeveralCrts(t *testing.T) {
	first, second := combinedPEM(t, "a"), combinedPEM(t, "b")
	cfg := "listen stats\n  bind 10.1.1.10:9600 ssl crt " + first + " crt " + second + "\n  mode http\n  stats enable\n" + statsTCPPair
	c, ws, out := importText(t, cfg, Options{})
	if c.Stats == nil || c.Stats.TLS == nil || c.Stats.TLS.CertFile != first {
		t.Fatalf("want stats.tls from %s:\n%s", first, out)
	}
	if !warningAt(ws, 2, "serves one certificate: the first") {
		t.Errorf("no warning about the second certificate: %v", ws)
	}
}
