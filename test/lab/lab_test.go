package lab

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"halb/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The generated config must be one halb accepts, with the lab's options.
func TestConfigLoads(t *testing.T) {
	dir := t.TempDir()
	l := New(Options{LBs: 3, CPs: 2, Policy: "sticky", PreemptDelay: 2 * time.Second, Quorum: true, Priorities: []int{10}}, slog.New(slog.DiscardHandler))
	l.dir, l.prefix = dir, "hltest"
	path := filepath.Join(dir, "lb1.yaml")
	if err := os.WriteFile(path, []byte(l.Config()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.KeyFile(), []byte("ignored: Load does not read the key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("generated config does not load: %v\n%s", err, l.Config())
	}
	c := cfg.Cluster
	if c == nil || len(c.Nodes) != 3 || c.Policy != config.Sticky || c.PreemptDelay != 2*time.Second || !c.Quorum {
		t.Fatalf("cluster = %+v", c)
	}
	if c.Nodes[0].Priority != 10 || c.Nodes[1].Priority != 100 || c.Nodes[2].Address != LBAddr(3) {
		t.Errorf("nodes = %+v, want lb1 priority 10 (given), lb2 100 (default), lb3 at %s", c.Nodes, LBAddr(3))
	}
	if len(cfg.Backends) != 2 || len(cfg.Backends[0].Servers) != 2 || cfg.Backends[0].Servers[1].Address.Addr() != CPAddr(2) {
		t.Errorf("backends = %+v, want two with cp1 and cp2", cfg.Backends)
	}
	if len(cfg.VIPs) != 1 || cfg.VIPs[0].Address.Addr() != VIP() || cfg.VIPs[0].Interface != "eth0" {
		t.Errorf("vips = %+v", cfg.VIPs)
	}

	l.opts.Insecure = true
	if text := l.Config(); !strings.Contains(text, "insecure_gossip: true") || strings.Contains(text, "key_file") {
		t.Errorf("insecure config still names a key file:\n%s", text)
	}
}

// The health checks carry credentials the way a Talos user's would, and
// NoCheckCredentials renders the same checks without them.
func TestConfigCredentials(t *testing.T) {
	l := New(Options{CPs: 2}, slog.New(slog.DiscardHandler))
	l.dir, l.prefix, l.opts.Insecure = t.TempDir(), "hltest", true
	type health struct {
		Type string `yaml:"type"`
		Path string `yaml:"path"`
		TLS  *struct {
			Kubeconfig  string `yaml:"kubeconfig"`
			Talosconfig string `yaml:"talosconfig"`
		} `yaml:"tls"`
	}
	render := func() map[string]health {
		t.Helper()
		text := l.Config()
		path := filepath.Join(l.dir, "lb1.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(path); err != nil {
			t.Fatalf("config does not load: %v\n%s", err, text)
		}
		var doc struct {
			Backends []struct {
				Name   string `yaml:"name"`
				Health health `yaml:"health"`
			} `yaml:"backends"`
		}
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatal(err)
		}
		out := map[string]health{}
		for _, b := range doc.Backends {
			out[b.Name] = b.Health
		}
		return out
	}
	h := render()
	k8s, talos := h["k8s_controlplane"], h["talos_controlplane"]
	if k8s.Type != "https" || k8s.Path != "/readyz" || k8s.TLS == nil || k8s.TLS.Kubeconfig != filepath.Join(l.PKIDir(), "health.kubeconfig") {
		t.Errorf("k8s check = %+v, want https /readyz with the health kubeconfig", k8s)
	}
	if talos.Type != "tls" || talos.TLS == nil || talos.TLS.Talosconfig != filepath.Join(l.PKIDir(), "health.talosconfig") {
		t.Errorf("talos check = %+v, want tls with the health talosconfig", talos)
	}

	l.opts.NoCheckCredentials = true
	h = render()
	k8s, talos = h["k8s_controlplane"], h["talos_controlplane"]
	if k8s.Type != "https" || k8s.Path != "/readyz" || k8s.TLS != nil || talos.Type != "tls" || talos.TLS != nil {
		t.Errorf("checks without credentials = %+v and %+v, want the same checks without tls blocks", k8s, talos)
	}
}

func TestPredicates(t *testing.T) {
	if !ExactlyOne()([]string{"lb2"}) || ExactlyOne()([]string{"lb1", "lb2"}) || ExactlyOne()(nil) {
		t.Error("ExactlyOne() over all nodes")
	}
	// A cut-off node's leftover VIP is ignored when it is not among the counted.
	if !ExactlyOne("lb2", "lb3")([]string{"lb1", "lb3"}) {
		t.Error("ExactlyOne(lb2, lb3) should ignore lb1")
	}
	if !Only("lb1")([]string{"lb1"}) || Only("lb1")([]string{"lb1", "lb2"}) || Only("lb1")(nil) {
		t.Error("Only(lb1)")
	}
}

func TestNames(t *testing.T) {
	for host, want := range map[string]string{"cl": "192.168.66.100", "lb2": "192.168.66.152", "cp3": "192.168.66.163"} {
		if a, err := addrOf(host); err != nil || a.String() != want {
			t.Errorf("addrOf(%s) = %s, %v; want %s", host, a, err, want)
		}
	}
	for _, bad := range []string{"sw", "lb0", "xx1", "lb"} {
		if _, err := addrOf(bad); err == nil {
			t.Errorf("addrOf(%s) succeeded", bad)
		}
	}
	for p, ok := range map[string]bool{"hl1a2b": true, "h": false, "hl1a2b3": false, "HL12": false, "hl-1": false} {
		if validPrefix(p) != ok {
			t.Errorf("validPrefix(%q) = %v", p, !ok)
		}
	}
	// Namespace and interface names must fit IFNAMSIZ (15).
	l := New(Options{}, slog.New(slog.DiscardHandler))
	l.prefix = "hl1a2b"
	if n := l.NS("cp9"); len(n) > 15 {
		t.Errorf("namespace %q longer than 15", n)
	}
}
