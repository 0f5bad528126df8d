package health

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// kubeAPI answers like a kube-apiserver with --anonymous-auth=false: 401
// without a verified client certificate or the right bearer token, 403 to
// the user "nobody", 503 on /readyz while shutting down.
type kubeAPI struct {
	token    string
	notReady atomic.Bool
}

func (k *kubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user := ""
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		user = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if r.Header.Get("Authorization") == "Bearer "+k.token {
		user = "system:serviceaccount:kube-system:halb"
	}
	switch {
	case user == "":
		http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
	case user == "nobody":
		http.Error(w, `{"kind":"Status","code":403}`, http.StatusForbidden)
	case r.URL.Path == "/readyz" && k.notReady.Load():
		http.Error(w, "[-]shutdown failed: reason withheld", http.StatusServiceUnavailable)
	default:
		_, _ = io.WriteString(w, "ok")
	}
}

// writeKubeconfig writes a one-context kubeconfig trusting ca with the
// given user entry (YAML lines under user:).
func writeKubeconfig(t *testing.T, dir, name string, ca []byte, user string) string {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
    - name: c
      cluster:
        server: https://192.168.66.160:6443
        certificate-authority-data: %s
contexts:
    - name: c
      context: {cluster: c, user: u}
current-context: c
users:
    - name: u
      user:
%s`, b64(ca), user)
	return writeFile(t, dir, name, []byte(doc))
}

func certUser(c support.Cert) string {
	return fmt.Sprintf("        client-certificate-data: %s\n        client-key-data: %s\n", b64(c.CertPEM), b64(c.KeyPEM))
}

func wantResult(t *testing.T, res Result, ok bool, kind Failure, reason string) {
	t.Helper()
	if res.OK != ok || (!ok && res.Failure != kind) || res.Reason != reason {
		t.Fatalf("result %+v (failure %s)\nwant ok=%v failure %s reason\n  %q", res, res.Failure, ok, kind, reason)
	}
}

func TestKubeAPICheckCredentials(t *testing.T) {
	const ip = "127.0.0.41"
	dir := t.TempDir()
	ca, other := support.NewCA(t, "kubernetes"), support.NewCA(t, "another cluster")
	api := &kubeAPI{token: "s3cr3t"}
	srvCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.Issue(t, support.Leaf{CommonName: "kube-apiserver", Usage: x509.ExtKeyUsageServerAuth, Names: []string{ip}}).TLS},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
	addr := serverAddr(t, serve(t, ip, api, srvCfg))

	health := ca.Issue(t, support.Leaf{CommonName: "halb-health", Usage: x509.ExtKeyUsageClientAuth})
	nobody := ca.Issue(t, support.Leaf{CommonName: "nobody", Usage: x509.ExtKeyUsageClientAuth})
	kubeconfig := func(name, user string) config.TLSOptions {
		return config.TLSOptions{Kubeconfig: writeKubeconfig(t, dir, name, ca.PEM, user)}
	}
	readyz := func(o config.TLSOptions) Checker {
		return mustChecker(t, config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: o})
	}

	tests := []struct {
		name   string
		opts   config.TLSOptions
		ok     bool
		kind   Failure
		reason string
	}{
		{"anonymous", config.TLSOptions{}, false, Rejected, "401 Unauthorized: " + HintAnonymous401},
		{"client certificate", kubeconfig("cert", certUser(health)), true, 0, "200 OK"},
		{"bearer token", kubeconfig("token", "        token: s3cr3t\n"), true, 0, "200 OK"},
		{"wrong token", kubeconfig("bad-token", "        token: guessed\n"), false, Rejected, "401 Unauthorized: " + HintCredentials401},
		{"user without rights", kubeconfig("nobody", certUser(nobody)), false, Rejected, "403 Forbidden: " + HintForbidden403},
		{"server certificate from another CA", config.TLSOptions{Kubeconfig: writeKubeconfig(t, dir, "other-ca", other.PEM, certUser(health))}, false, Rejected,
			"tls handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority: " + HintServerUnknownCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantResult(t, check(t, readyz(tt.opts), addr, 2*time.Second), tt.ok, tt.kind, tt.reason)
		})
	}
	t.Run("not ready", func(t *testing.T) {
		api.notReady.Store(true)
		defer api.notReady.Store(false)
		wantResult(t, check(t, readyz(kubeconfig("cert", certUser(health))), addr, 2*time.Second), false, NotReady, "status 503, want 200")
	})
	t.Run("refused", func(t *testing.T) {
		res := check(t, readyz(kubeconfig("cert", certUser(health))), refusedAddr(t, ip), time.Second)
		wantResult(t, res, false, Gone, "connection refused")
	})
	t.Run("accepts and never answers", func(t *testing.T) {
		silent := addrOf(t, listen(t, ip))
		res := check(t, readyz(kubeconfig("cert", certUser(health))), silent, 300*time.Millisecond)
		// The budget is measured when the probe starts, a little after the
		// deadline was set: under load it reads as less than 300ms.
		if res.OK || res.Failure != Gone || !strings.HasPrefix(res.Reason, "timeout after ") {
			t.Fatalf("result %+v, want gone after a timeout", res)
		}
	})
}

// apid is a TLS server like the Talos API: it requires a client
// certificate from its CA and reports the outcome of every handshake.
type apid struct {
	handshakes chan error
	wg         sync.WaitGroup
}

func startAPID(t *testing.T, ip string, cfg *tls.Config) (*apid, net.Listener) {
	t.Helper()
	ln := listen(t, ip)
	a := &apid{handshakes: make(chan error, 16)}
	a.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Go(func() { a.serve(conn, cfg) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		a.wg.Wait()
	})
	return a, ln
}

func (a *apid) serve(conn net.Conn, cfg *tls.Config) {
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(wait))
	s := tls.Server(conn, cfg)
	err := s.Handshake()
	a.handshakes <- err
	if err == nil {
		// Serve until the client leaves, as apid waits for requests.
		_, _ = io.Copy(io.Discard, s)
	}
}

// handshake returns the outcome of the server's next handshake.
func (a *apid) handshake(t *testing.T) error {
	t.Helper()
	select {
	case err := <-a.handshakes:
		return err
	case <-time.After(wait):
		t.Fatal("the server saw no handshake")
		return nil
	}
}

func TestTalosAPICheckCredentials(t *testing.T) {
	const ip = "127.0.0.42"
	dir := t.TempDir()
	osCA, rogue := support.NewCA(t, "talos os"), support.NewCA(t, "rogue")
	reader := osCA.Issue(t, support.Leaf{CommonName: "halb", Orgs: []string{"os:reader"}, Usage: x509.ExtKeyUsageClientAuth})
	rogueCert := rogue.Issue(t, support.Leaf{CommonName: "halb", Orgs: []string{"os:reader"}, Usage: x509.ExtKeyUsageClientAuth})
	talosconfig := func(name string, ca []byte, cert support.Cert) string {
		return writeTalosconfig(t, dir+"/"+name, "lab", talosContextYAML("lab", ca, cert))
	}
	good := talosconfig("good", osCA.PEM, reader)
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			srv, ln := startAPID(t, ip, &tls.Config{
				MinVersion:   version,
				MaxVersion:   version,
				Certificates: []tls.Certificate{osCA.Issue(t, support.Leaf{CommonName: "apid", Usage: x509.ExtKeyUsageServerAuth, Names: []string{ip}}).TLS},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    osCA.Pool(),
			})
			addr := addrOf(t, ln)
			// TLS 1.3 servers say certificate_required to a client
			// without a certificate, Go's TLS 1.2 ones handshake_failure.
			noCert := map[uint16]string{
				tls.VersionTLS13: "certificate required: " + HintNoClientCert,
				tls.VersionTLS12: "handshake failure: " + HintHandshakeNoCert,
			}[version]
			wrongCA := map[uint16]string{tls.VersionTLS13: "certificate required", tls.VersionTLS12: "handshake failure"}[version]

			tests := []struct {
				name     string
				opts     config.TLSOptions
				ok       bool
				reason   string
				serverOK bool // the server's handshake succeeded
			}{
				{"without a client certificate", config.TLSOptions{}, false,
					"tls handshake: remote error: tls: " + noCert, false},
				{"certificate from another CA", config.TLSOptions{Talosconfig: talosconfig("rogue", osCA.PEM, rogueCert)}, false,
					"tls handshake: remote error: tls: " + wrongCA + ": " + HintWrongCA, false},
				{"os:reader talosconfig", config.TLSOptions{Talosconfig: good}, true,
					"handshake ok (" + tls.VersionName(version) + ")", true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					res := check(t, mustChecker(t, config.HealthCheck{Type: config.CheckTLS, TLS: tt.opts}), addr, 2*time.Second)
					err := srv.handshake(t)
					wantResult(t, res, tt.ok, Rejected, tt.reason)
					if tt.serverOK && err != nil {
						t.Fatalf("the server logged a failed handshake from a passing check: %v", err)
					}
					if !tt.serverOK && err == nil {
						t.Fatal("the server accepted a check it should have refused")
					}
				})
			}
			t.Run("server certificate from another CA", func(t *testing.T) {
				o := config.TLSOptions{Talosconfig: talosconfig("untrusted", rogue.PEM, reader)}
				res := check(t, mustChecker(t, config.HealthCheck{Type: config.CheckTLS, TLS: o}), addr, 2*time.Second)
				_ = srv.handshake(t) // our side gave up; only its own outcome is drained
				wantResult(t, res, false, Rejected,
					"tls handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority: "+HintServerUnknownCA)
			})
			t.Run("server name the certificate lacks", func(t *testing.T) {
				o := config.TLSOptions{Talosconfig: good, ServerName: "cp9.example"}
				res := check(t, mustChecker(t, config.HealthCheck{Type: config.CheckTLS, TLS: o}), addr, 2*time.Second)
				_ = srv.handshake(t)
				if res.OK || res.Failure != Rejected || !strings.HasSuffix(res.Reason, ": "+HintServerName) {
					t.Fatalf("result %+v, want rejected with %q", res, HintServerName)
				}
			})
		})
	}
}
