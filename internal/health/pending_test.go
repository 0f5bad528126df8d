package health

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// A credential file that does not exist yet (halb started before the Talos
// cluster behind the VIP) makes the check rejected for credentials, naming
// the file, not a failed start; once the file appears the next probe uses
// it, without a restart or reload.
func TestMissingCredentialsLoadedWhenTheyAppear(t *testing.T) {
	const ip = "127.0.0.44"
	dir := t.TempDir()
	ca := support.NewCA(t, "kubernetes")
	srvCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.Issue(t, support.Leaf{CommonName: "kube-apiserver", Usage: x509.ExtKeyUsageServerAuth, Names: []string{ip}}).TLS},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
	addr := serverAddr(t, serve(t, ip, &kubeAPI{}, srvCfg))
	path := filepath.Join(dir, "health.kubeconfig")
	hc := config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: config.TLSOptions{Kubeconfig: path}}

	c, err := NewChecker(hc)
	if err != nil {
		t.Fatalf("a missing credential file failed the checker: %v", err)
	}
	res := check(t, c, addr, 2*time.Second)
	if res.OK || res.Failure != Rejected || !strings.Contains(res.Reason, "credentials not loaded") ||
		!strings.Contains(res.Reason, path) || !strings.Contains(res.Reason, DocCheckCredentials) {
		t.Fatalf("result %+v, want rejected for credentials naming %s and the docs", res, path)
	}

	health := ca.Issue(t, support.Leaf{CommonName: "halb-health", Usage: x509.ExtKeyUsageClientAuth})
	written := writeKubeconfig(t, dir, "health.kubeconfig", ca.PEM, certUser(health))
	if written != path {
		t.Fatalf("wrote %s, want %s", written, path)
	}
	wantResult(t, check(t, c, addr, 2*time.Second), true, 0, "200 OK")

	// A renewed credential is read at the next probe, without a reload:
	// here a user the server refuses, then a broken file, then a good one.
	nobody := ca.Issue(t, support.Leaf{CommonName: "nobody", Usage: x509.ExtKeyUsageClientAuth})
	writeKubeconfig(t, dir, "health.kubeconfig", ca.PEM, certUser(nobody))
	wantResult(t, check(t, c, addr, 2*time.Second), false, Rejected, "403 Forbidden: "+HintForbidden403)
	if err := os.WriteFile(path, []byte("apiVersion: v1\nkind: Config\nusers: [{name: u, user: {client-key-data: '%%%'}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = check(t, c, addr, 2*time.Second)
	if res.OK || res.Failure != Rejected || !strings.Contains(res.Reason, "credentials not loaded") || !strings.Contains(res.Reason, path) {
		t.Fatalf("after the file broke: %+v, want rejected for credentials naming the file", res)
	}
	writeKubeconfig(t, dir, "health.kubeconfig", ca.PEM, certUser(health)+"        # renewed\n")
	wantResult(t, check(t, c, addr, 2*time.Second), true, 0, "200 OK")
}

// Anything else wrong with a credential file still fails at start, where
// the operator sees it.
func TestMalformedCredentialsStillFailAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talosconfig")
	if err := os.WriteFile(path, []byte("context: x\ncontexts: {x: {ca: '!!', crt: '', key: ''}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewChecker(config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{Talosconfig: path}}); err == nil {
		t.Fatal("a malformed talosconfig did not fail the checker")
	}
}
