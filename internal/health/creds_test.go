package health

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// talosContextYAML is one context of a talosconfig as talosctl writes it.
func talosContextYAML(name string, ca []byte, cert support.Cert) string {
	return fmt.Sprintf(`    %s:
        endpoints:
            - 192.168.66.161
            - 192.168.66.162
        nodes:
            - 192.168.66.161
        ca: %s
        crt: %s
        key: %s
`, name, b64(ca), b64(cert.CertPEM), b64(cert.KeyPEM))
}

// writeTalosconfig writes a talosconfig whose current context is current.
func writeTalosconfig(t *testing.T, dir, current string, contexts ...string) string {
	t.Helper()
	doc := "context: " + current + "\ncontexts:\n" + strings.Join(contexts, "")
	return writeFile(t, dir, "talosconfig", []byte(doc))
}

// kubeconfigYAML is a kubeconfig as talosctl kubeconfig writes it, plus a
// second context whose user and CA are files next to it, and a token user.
func kubeconfigYAML(ca []byte, admin support.Cert, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
    - name: prod
      cluster:
        server: https://192.168.66.160:6443
        certificate-authority-data: %s
    - name: prod-files
      cluster:
        server: https://192.168.66.160:6443
        certificate-authority: pki/ca.crt
        tls-server-name: kubernetes
contexts:
    - name: admin@prod
      context:
        cluster: prod
        namespace: default
        user: admin@prod
    - name: files
      context:
        cluster: prod-files
        user: files
    - name: token
      context:
        cluster: prod
        user: token
current-context: admin@prod
users:
    - name: admin@prod
      user:
        client-certificate-data: %s
        client-key-data: %s
    - name: files
      user:
        client-certificate: pki/health.crt
        client-key: pki/health.key
    - name: token
      user:
        token: %s
preferences: {}
`, b64(ca), b64(admin.CertPEM), b64(admin.KeyPEM), token)
}

func mustCredentials(t *testing.T, hc config.HealthCheck) *credentials {
	t.Helper()
	cr, err := loadCredentials(hc)
	if err != nil {
		t.Fatalf("load credentials of %+v: %v", hc.TLS, err)
	}
	return cr
}

// presents reports whether cr's client certificate is want.
func presents(cr *credentials, want support.Cert) bool {
	return len(cr.tls.Certificates) == 1 && bytes.Equal(cr.tls.Certificates[0].Certificate[0], want.TLS.Certificate[0])
}

func TestTalosconfigContexts(t *testing.T) {
	dir := t.TempDir()
	labCA, prodCA := support.NewCA(t, "lab talos"), support.NewCA(t, "prod talos")
	reader := labCA.Issue(t, support.Leaf{CommonName: "health", Orgs: []string{"os:reader"}, Usage: x509.ExtKeyUsageClientAuth})
	admin := prodCA.Issue(t, support.Leaf{CommonName: "admin", Orgs: []string{"os:admin"}, Usage: x509.ExtKeyUsageClientAuth})
	path := writeTalosconfig(t, dir, "lab", talosContextYAML("lab", labCA.PEM, reader), talosContextYAML("prod", prodCA.PEM, admin))

	t.Run("current context", func(t *testing.T) {
		cr := mustCredentials(t, config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{Talosconfig: path}})
		if !presents(cr, reader) {
			t.Fatal("the check does not present the lab context's certificate")
		}
		if cr.tls.InsecureSkipVerify || cr.tls.RootCAs == nil || !cr.tls.RootCAs.Equal(labCA.Pool()) {
			t.Fatal("the check does not verify servers against the talosconfig's CA")
		}
		if len(cr.warnings) != 0 {
			t.Fatalf("warnings %q for an os:reader certificate, want none", cr.warnings)
		}
	})
	t.Run("chosen context with an admin certificate", func(t *testing.T) {
		ws, err := CredentialWarnings(config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{Talosconfig: path, Context: "prod"}})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`health.tls.talosconfig %s: context "prod" has a client certificate with role os:admin, which can change and reboot the nodes, for a health check: use an os:reader talosconfig (talosctl config new --roles os:reader FILE)`, path)
		if len(ws) != 1 || ws[0] != want {
			t.Fatalf("warnings %q, want [%q]", ws, want)
		}
		cr := mustCredentials(t, config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{Talosconfig: path, Context: "prod"}})
		if !presents(cr, admin) || !cr.tls.RootCAs.Equal(prodCA.Pool()) {
			t.Fatal("the check does not use the prod context")
		}
	})
	t.Run("ca_file wins over the talosconfig's CA", func(t *testing.T) {
		caFile := writeFile(t, dir, "other-ca.pem", prodCA.PEM)
		cr := mustCredentials(t, config.HealthCheck{Type: config.CheckTLS, TLS: config.TLSOptions{Talosconfig: path, CAFile: caFile}})
		if !cr.tls.RootCAs.Equal(prodCA.Pool()) {
			t.Fatal("ca_file did not replace the talosconfig's CA")
		}
	})
}

func TestKubeconfigContexts(t *testing.T) {
	dir := t.TempDir()
	ca := support.NewCA(t, "kubernetes")
	admin := ca.Issue(t, support.Leaf{CommonName: "admin", Orgs: []string{"system:masters"}, Usage: x509.ExtKeyUsageClientAuth})
	health := ca.Issue(t, support.Leaf{CommonName: "halb-health", Usage: x509.ExtKeyUsageClientAuth})
	writeFile(t, dir, "pki/ca.crt", ca.PEM)
	writeFile(t, dir, "pki/health.crt", health.CertPEM)
	writeFile(t, dir, "pki/health.key", health.KeyPEM)
	path := writeFile(t, dir, "kubeconfig", []byte(kubeconfigYAML(ca.PEM, admin, "s3cr3t-t0ken")))
	https := func(context string) config.HealthCheck {
		return config.HealthCheck{Type: config.CheckHTTPS, TLS: config.TLSOptions{Kubeconfig: path, Context: context}}
	}

	t.Run("current context: an admin certificate", func(t *testing.T) {
		cr := mustCredentials(t, https(""))
		if !presents(cr, admin) || cr.tls.InsecureSkipVerify || !cr.tls.RootCAs.Equal(ca.Pool()) || cr.token != "" {
			t.Fatalf("credentials %+v, want the admin certificate and the cluster CA", cr)
		}
		want := fmt.Sprintf(`health.tls.kubeconfig %s: user "admin@prod" has a client certificate in group system:masters (cluster-admin, beyond the reach of RBAC) for a health check: use a client certificate for a user with no rights beyond the health endpoints (any authenticated user may read /healthz, /livez and /readyz)`, path)
		if len(cr.warnings) != 1 || cr.warnings[0] != want {
			t.Fatalf("warnings %q, want [%q]", cr.warnings, want)
		}
	})
	t.Run("files relative to the kubeconfig", func(t *testing.T) {
		cr := mustCredentials(t, https("files"))
		if !presents(cr, health) || !cr.tls.RootCAs.Equal(ca.Pool()) || cr.tls.ServerName != "kubernetes" {
			t.Fatalf("credentials %+v, want the health certificate, the CA file and tls-server-name", cr)
		}
		if len(cr.warnings) != 0 {
			t.Fatalf("warnings %q, want none", cr.warnings)
		}
	})
	t.Run("token", func(t *testing.T) {
		cr := mustCredentials(t, https("token"))
		if cr.token != "s3cr3t-t0ken" || cr.hasCert || cr.source != "health.tls.kubeconfig" {
			t.Fatalf("credentials %+v, want the token", cr)
		}
		if len(cr.warnings) != 0 {
			t.Fatalf("warnings %q for a token sent to verified servers, want none", cr.warnings)
		}
	})
	t.Run("token to unverified servers", func(t *testing.T) {
		kc := strings.Replace(kubeconfigYAML(ca.PEM, admin, "tok"), "certificate-authority-data: "+b64(ca.PEM), "insecure-skip-tls-verify: true", 1)
		p := writeFile(t, dir, "kubeconfig-insecure", []byte(kc))
		ws, err := CredentialWarnings(config.HealthCheck{Type: config.CheckHTTPS, TLS: config.TLSOptions{Kubeconfig: p, Context: "token"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != 1 || !strings.Contains(ws[0], `user "token" sends a bearer token to servers whose certificate the check does not verify`) {
			t.Fatalf("warnings %q, want one about the unverified token", ws)
		}
	})
	t.Run("tokenFile", func(t *testing.T) {
		writeFile(t, dir, "sa/token", []byte("file-token\n"))
		kc := strings.Replace(kubeconfigYAML(ca.PEM, admin, "x"), "token: x", "tokenFile: sa/token", 1)
		p := writeFile(t, dir, "kubeconfig-tokenfile", []byte(kc))
		cr := mustCredentials(t, config.HealthCheck{Type: config.CheckHTTPS, TLS: config.TLSOptions{Kubeconfig: p, Context: "token"}})
		if cr.token != "file-token" {
			t.Fatalf("token %q, want the file's", cr.token)
		}
	})
}

func TestCredentialErrors(t *testing.T) {
	dir := t.TempDir()
	ca := support.NewCA(t, "ca")
	cert := ca.Issue(t, support.Leaf{CommonName: "health", Usage: x509.ExtKeyUsageClientAuth})
	talos := writeTalosconfig(t, dir, "lab", talosContextYAML("lab", ca.PEM, cert))
	kube := kubeconfigYAML(ca.PEM, cert, "tok")
	kubeconfig := func(name, doc string) string { return writeFile(t, dir, name, []byte(doc)) }
	goodKube := kubeconfig("kubeconfig", kube)
	badKey := kubeconfig("bad-key", strings.Replace(kube, "client-key-data: ", "client-key-data: abcd*", 1))
	noUser := kubeconfig("no-user", strings.Replace(kube, "user: admin@prod\n    - name: files", "user: ghost\n    - name: files", 1))
	noCluster := kubeconfig("no-cluster", strings.Replace(kube, "cluster: prod\n        namespace", "cluster: staging\n        namespace", 1))
	execUser := kubeconfig("exec", `apiVersion: v1
kind: Config
current-context: oidc
contexts:
    - name: oidc
      context: {cluster: c, user: oidc}
clusters:
    - name: c
      cluster: {server: "https://192.168.66.160:6443"}
users:
    - name: oidc
      user:
        exec:
            apiVersion: client.authentication.k8s.io/v1
            command: kubectl
            args: [oidc-login, get-token]
`)
	noCurrent := kubeconfig("no-current", strings.Replace(kube, "current-context: admin@prod\n", "", 1))
	noCrt := writeFile(t, dir, "talos-nocrt", []byte("context: omni\ncontexts:\n    omni:\n        endpoints: [https://omni.example]\n        auth:\n            siderov1: {identity: me@example.com}\n"))
	big := writeFile(t, dir, "big", bytes.Repeat([]byte("#"), maxCredentialFile+1))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	tlsCheck := func(o config.TLSOptions) config.HealthCheck { return config.HealthCheck{Type: config.CheckTLS, TLS: o} }
	httpsCheck := func(o config.TLSOptions) config.HealthCheck {
		return config.HealthCheck{Type: config.CheckHTTPS, TLS: o}
	}

	tests := []struct {
		name string
		hc   config.HealthCheck
		want string
	}{
		{"bad base64", httpsCheck(config.TLSOptions{Kubeconfig: badKey}),
			"health.tls.kubeconfig " + badKey + ": users[0].user.client-key-data: illegal base64 data at input byte 4"},
		{"missing talos context", tlsCheck(config.TLSOptions{Talosconfig: talos, Context: "prod"}),
			"health.tls.talosconfig " + talos + `: context "prod" not found (contexts: lab)`},
		{"missing kube context", httpsCheck(config.TLSOptions{Kubeconfig: goodKube, Context: "prod"}),
			"health.tls.kubeconfig " + goodKube + `: context "prod" not found (contexts: admin@prod, files, token)`},
		{"no current context", httpsCheck(config.TLSOptions{Kubeconfig: noCurrent}),
			"health.tls.kubeconfig " + noCurrent + ": current-context: the file names none; set health.tls.context (contexts: admin@prod, files, token)"},
		{"missing user", httpsCheck(config.TLSOptions{Kubeconfig: noUser}),
			"health.tls.kubeconfig " + noUser + `: contexts[0].context.user: user "ghost" not found (users: admin@prod, files, token)`},
		{"missing cluster", httpsCheck(config.TLSOptions{Kubeconfig: noCluster}),
			"health.tls.kubeconfig " + noCluster + `: contexts[0].context.cluster: cluster "staging" not found (clusters: prod, prod-files)`},
		{"exec user", httpsCheck(config.TLSOptions{Kubeconfig: execUser}),
			"health.tls.kubeconfig " + execUser + ": users[0].user.exec: halb does not run credential plugins; it needs a user with a client certificate (client-certificate-data and client-key-data) or a token"},
		{"token on a tls check", tlsCheck(config.TLSOptions{Kubeconfig: goodKube, Context: "token"}),
			"health.tls.kubeconfig " + goodKube + ": users[2].user: a token user on a tls check: only an https check can send a bearer token; use type: https, or a user with a client certificate"},
		{"missing file of a kubeconfig", httpsCheck(config.TLSOptions{Kubeconfig: goodKube, Context: "files"}),
			"health.tls.kubeconfig " + goodKube + ": clusters[1].cluster.certificate-authority: open " + filepath.Join(dir, "pki/ca.crt") + ": no such file or directory"},
		{"talos context without a certificate", tlsCheck(config.TLSOptions{Talosconfig: noCrt}),
			"health.tls.talosconfig " + noCrt + ": contexts.omni: no client certificate (crt and key); halb needs one: create an os:reader talosconfig with talosctl config new --roles os:reader FILE"},
		{"both files", tlsCheck(config.TLSOptions{Talosconfig: talos, Kubeconfig: goodKube}),
			"health.tls: talosconfig, kubeconfig and cert_file are mutually exclusive"},
		{"context without a file", tlsCheck(config.TLSOptions{Context: "lab"}),
			"health.tls.context: needs health.tls.talosconfig or health.tls.kubeconfig"},
		{"a FIFO", tlsCheck(config.TLSOptions{Talosconfig: fifo}),
			"health.tls.talosconfig " + fifo + ": " + fifo + ": not a regular file (p---------)"},
		{"too large", httpsCheck(config.TLSOptions{Kubeconfig: big}),
			"health.tls.kubeconfig " + big + ": " + big + ": larger than 1024 KiB"},
		{"missing talosconfig", tlsCheck(config.TLSOptions{Talosconfig: dir + "/nope"}),
			"health.tls.talosconfig " + dir + "/nope: open " + dir + "/nope: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := newChecker(tt.hc) // NewChecker tolerates missing files: see pending_test.go
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(wait):
				t.Fatal("NewChecker hangs")
			}
			if err == nil {
				t.Fatalf("NewChecker succeeded, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error\n  %q\nwant it to start with\n  %q", err, tt.want)
			}
		})
	}
}

// TestCredentialWarningsOnlyForTLSChecks: a tcp check names no files it
// would read, so there is nothing to warn about or fail.
func TestCredentialWarningsOnlyForTLSChecks(t *testing.T) {
	ws, err := CredentialWarnings(config.HealthCheck{Type: config.CheckTCP, TLS: config.TLSOptions{Talosconfig: "/nonexistent"}})
	if err != nil || ws != nil {
		t.Fatalf("CredentialWarnings(tcp) = %q, %v; want nothing", ws, err)
	}
}
