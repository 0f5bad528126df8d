package health

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"halb/test/support"
)

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
	ca := support.NewCA(t, "halb test CA")
	p := &testPKI{pool: ca.Pool(), dir: dir}
	p.caFile = writeFile(t, dir, "ca.pem", ca.PEM)
	p.server = ca.Issue(t, support.Leaf{CommonName: "halb test leaf", Usage: x509.ExtKeyUsageServerAuth, Names: append([]string{serverName}, serverIPs...)}).TLS
	cli := ca.Issue(t, support.Leaf{CommonName: "halb test leaf", Usage: x509.ExtKeyUsageClientAuth})
	p.clientCertFile = writeFile(t, dir, "client.pem", cli.CertPEM)
	p.clientKeyFile = writeFile(t, dir, "client-key.pem", cli.KeyPEM)
	return p
}

// serverConfig returns a TLS server config with the test certificate.
func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
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
