package cli

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"halb/internal/health"
	"halb/test/support"
)

// listenOn opens a listener on ip with a free port, closed at the end.
func listenOn(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// httpServer serves h on ip, with TLS if tlsOn, counting requests.
func httpServer(t *testing.T, ip string, tlsOn bool, h http.HandlerFunc) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	_ = s.Listener.Close()
	s.Listener = listenOn(t, ip)
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s.Listener.Addr().String(), &n
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "halb.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// probeLine matches one output line of --probe: columns are separated by
// at least two spaces, the diagnosis is the rest of the line.
var probeLine = regexp.MustCompile(`^(\S+)\s{2,}(\S+)\s{2,}(\S+)\s{2,}(ok|gone|not ready|rejected: credentials)\s{2,}(.+)$`)

func TestCheckProbe(t *testing.T) {
	up := listenOn(t, "127.0.0.61").Addr().String()
	closed := listenOn(t, "127.0.0.61")
	refused := closed.Addr().String()
	_ = closed.Close()
	kube, kubeHits := httpServer(t, "127.0.0.62", true, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	})
	draining, _ := httpServer(t, "127.0.0.63", false, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	})
	doc := fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: kube}
backends:
  - name: plain
    health: {type: tcp, timeout: 500ms}
    servers:
      - {name: up, address: "%s"}
      - {name: down, address: "%s"}
  - name: kube
    health: {type: https, path: /readyz, timeout: 500ms}
    servers: [{name: cp1, address: "%s"}]
  - name: ready
    health: {type: http, path: /readyz, timeout: 500ms}
    servers: [{name: cp2, address: "%s"}]
cluster:
  insecure_gossip: true
  nodes: [{name: lb1, address: 127.0.0.1}]
`, up, refused, kube, draining)
	path := writeConfig(t, doc)

	out, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--probe", "--node", "lb1")
	t.Logf("halb check --probe:\n%s", out)
	if code != 2 {
		t.Fatalf("exit %d, want 2 (a probe failed)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	want := map[string][2]string{ // server: result, diagnosis
		"up":   {"ok", "connected"},
		"down": {"gone", "connection refused"},
		"cp1":  {"rejected: credentials", "401 Unauthorized: " + health.HintAnonymous401},
		"cp2":  {"not ready", "status 503, want 200"},
	}
	addrs := map[string]string{"up": up, "down": refused, "cp1": kube, "cp2": draining}
	got := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := probeLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		server := m[2]
		w, ok := want[server]
		if !ok {
			t.Fatalf("line for unknown server %q: %s", server, line)
		}
		if m[3] != addrs[server] || m[4] != w[0] || m[5] != w[1] {
			t.Errorf("line %q\nwant address %s, result %q, diagnosis %q", line, addrs[server], w[0], w[1])
		}
		got[server] = true
	}
	if len(got) != len(want) {
		t.Fatalf("lines for %v, want one for each of the 4 servers:\n%s", got, out)
	}
	for _, s := range []string{"probed 4 server(s) from lb1:", "BACKEND  SERVER", "3 of 4 check(s) failed"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if n := kubeHits.Load(); n != 1 {
		t.Errorf("the https server got %d requests, want exactly one probe", n)
	}

	t.Run("all pass", func(t *testing.T) {
		path := writeConfig(t, fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: plain}
backends:
  - name: plain
    servers: [{name: up, address: "%s"}]
`, up))
		out, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--probe")
		if code != 0 || !strings.Contains(out, "all 1 check(s) passed") {
			t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		_, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--probe", "--node", "lb9")
		if code != 1 || !strings.Contains(errOut, "--node lb9: not in cluster.nodes") {
			t.Fatalf("exit %d, stderr %q; want 1 naming the node", code, errOut)
		}
	})
}

// clientCertB64 returns a client certificate and key with the given
// organizations, base64-encoded PEM as kubeconfigs carry them.
func clientCertB64(t *testing.T, orgs ...string) (cert, key string) {
	t.Helper()
	c := support.NewCA(t, "kubernetes").Issue(t, support.Leaf{CommonName: "admin", Orgs: orgs, Usage: x509.ExtKeyUsageClientAuth})
	return base64.StdEncoding.EncodeToString(c.CertPEM), base64.StdEncoding.EncodeToString(c.KeyPEM)
}

func TestCheckReadsCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := clientCertB64(t, "system:masters")
	kubeconfig := func(name, keyData string) string {
		path := filepath.Join(dir, name)
		doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.168.66.160:6443"}}]
contexts: [{name: c, context: {cluster: c, user: admin}}]
current-context: c
users:
  - name: admin
    user:
      client-certificate-data: %s
      client-key-data: %s
`, cert, keyData)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	config := func(kc string) string {
		return writeConfig(t, fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: kube}
backends:
  - name: kube
    health:
      type: https
      tls: {kubeconfig: %s}
    servers: [{name: cp1, address: "127.0.0.2:6443"}]
`, kc))
	}

	bad := kubeconfig("bad", "abcd*"+key)
	cfg := config(bad)
	_, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg)
	want := cfg + ": backends[0].health.tls.kubeconfig " + bad + ": users[0].user.client-key-data: illegal base64 data at input byte 4"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("malformed kubeconfig: exit %d, stderr %q; want 1 with %q", code, errOut, want)
	}

	admin := kubeconfig("admin", key)
	cfg = config(admin)
	out, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg)
	want = cfg + ": warning: backends[0].health.tls.kubeconfig " + admin + `: user "admin" has a client certificate in group system:masters`
	if code != 0 || !strings.Contains(errOut, want) || !strings.Contains(out, "OK") {
		t.Fatalf("admin kubeconfig: exit %d, stdout %q, stderr %q; want 0 with the warning %q", code, out, errOut, want)
	}

	missing := filepath.Join(dir, "not-here")
	cfg = config(missing)
	_, errOut, code = run(context.Background(), newCheckCmd(), "--config", cfg)
	want = cfg + ": warning: backends[0].health.tls.kubeconfig: stat " + missing + ": no such file or directory"
	if code != 0 || !strings.Contains(errOut, want) {
		t.Fatalf("missing kubeconfig: exit %d, stderr %q; want 0 with %q", code, errOut, want)
	}
}
