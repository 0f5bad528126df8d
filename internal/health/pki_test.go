package health

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	pool   *x509.CertPool
	serial atomic.Int64
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA: %v", err)
	}
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool(),
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.pool.AddCert(cert)
	ca.serial.Store(1)
	return ca
}

// leafSpec describes a certificate to issue.
type leafSpec struct {
	cn    string
	orgs  []string // Talos roles, Kubernetes groups
	usage x509.ExtKeyUsage
	ips   []string
	dns   []string
}

// issued is a certificate with its key, as PEM and ready for crypto/tls.
type issued struct {
	certPEM, keyPEM []byte
	tls             tls.Certificate
}

func (ca *testCA) issue(t *testing.T, s leafSpec) issued {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{s.usage},
		DNSNames:     s.dns,
	}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("create leaf: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		tls:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}
}

// testPKI is a throwaway CA with a server and a client certificate, the
// CA and client files written to a temporary directory.
type testPKI struct {
	pool           *x509.CertPool
	server         tls.Certificate
	caFile         string
	clientCertFile string
	clientKeyFile  string
	dir            string
}

// serverName is the DNS name in the test server certificate; its IP SANs
// are the loopback addresses used by verifying tests.
const serverName = "health.test"

func newTestPKI(t *testing.T, serverIPs ...string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, "halb test CA")
	p := &testPKI{pool: ca.pool, dir: dir}
	p.caFile = writeFile(t, dir, "ca.pem", ca.pem)
	p.server = ca.issue(t, leafSpec{cn: "halb test leaf", usage: x509.ExtKeyUsageServerAuth, ips: serverIPs, dns: []string{serverName}}).tls
	cli := ca.issue(t, leafSpec{cn: "halb test leaf", usage: x509.ExtKeyUsageClientAuth})
	p.clientCertFile = writeFile(t, dir, "client.pem", cli.certPEM)
	p.clientKeyFile = writeFile(t, dir, "client-key.pem", cli.keyPEM)
	return p
}

// serverConfig returns a TLS server config with the test certificate.
func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	return writeFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatalf("create directory of %s: %v", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}
