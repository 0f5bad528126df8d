package stats

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"halb/internal/config"
)

// certFiles serves the stats listener's certificate from its PEM files and
// loads them again when either changes on disk (a renewal by certbot or
// cert-manager needs no restart). A replacement that does not load keeps
// the previous certificate in service, logged once per change; a
// replacement written in two steps (cert, then key) loads once both match.
type certFiles struct {
	files config.StatsTLS
	log   *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp // of the cert and key files as last looked at
	lastErr string       // the last failed reload, so it is logged once
}

// fileStamp tells a changed file from an unchanged one.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// loadCertFiles loads the pair once; an error names the file at fault, as
// the daemon cannot serve HTTPS without it.
func loadCertFiles(files config.StatsTLS, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{files: files, log: log}
	stamp := [2]fileStamp{stampOf(files.CertFile), stampOf(files.KeyFile)}
	cert, err := LoadKeyPair(files)
	if err != nil {
		return nil, err
	}
	c.cert, c.stamp = cert, stamp
	return c, nil
}

// LoadKeyPair reads and parses the stats listener's certificate and key,
// with an error naming the file (and the config field) that is wrong.
func LoadKeyPair(files config.StatsTLS) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(files.CertFile)
	if err != nil {
		return nil, fmt.Errorf("stats.tls.cert_file: read %s: %w", files.CertFile, err)
	}
	keyPEM, err := os.ReadFile(files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("stats.tls.key_file: read %s: %w", files.KeyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("stats.tls: certificate %s and key %s: %w", files.CertFile, files.KeyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("stats.tls.cert_file: parse %s: %w", files.CertFile, err)
		}
	}
	return &cert, nil
}

// ExpiryWarning says what is wrong with the validity period of cert at
// now, or "": an expired or not yet valid certificate still serves, but
// browsers refuse it.
func ExpiryWarning(files config.StatsTLS, cert *tls.Certificate, now time.Time) string {
	switch leaf := cert.Leaf; {
	case leaf == nil:
		return ""
	case now.After(leaf.NotAfter):
		return fmt.Sprintf("stats.tls.cert_file: %s expired on %s", files.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("stats.tls.cert_file: %s is not valid before %s", files.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

// get is tls.Config.GetCertificate: the current certificate, reloaded
// first if a file changed since the last look.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := [2]fileStamp{stampOf(c.files.CertFile), stampOf(c.files.KeyFile)}
	if stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := LoadKeyPair(c.files)
	if err != nil {
		// Keep the old stamp: the next handshake tries again, so the
		// second half of a two-step replacement is picked up.
		if err.Error() != c.lastErr {
			c.lastErr = err.Error()
			c.log.Warn("stats certificate changed on disk but does not load: still serving the previous one", "err", err)
		}
		return c.cert, nil
	}
	c.cert, c.stamp, c.lastErr = cert, stamp, ""
	attrs := []any{"cert_file", c.files.CertFile, "not_after", cert.Leaf.NotAfter}
	if w := ExpiryWarning(c.files, cert, time.Now()); w != "" {
		attrs = append(attrs, "warning", w)
	}
	c.log.Info("stats certificate reloaded", attrs...)
	return cert, nil
}

// tlsConfig is the listener's TLS configuration: TLS 1.2 or later, the
// certificate from c.
func (c *certFiles) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.get,
		// HTTP/1.1 only, as on the plain listener: the connection cap
		// and timeouts are per connection and tuned for it.
		NextProtos: []string{"http/1.1"},
	}
}
