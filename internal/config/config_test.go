package config

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const minimal = `
frontends:
  - name: api
    bind: 127.0.0.1:6443
    backend: cp
backends:
  - name: cp
    servers:
      - name: cp1
        address: 127.0.0.2:6443
`

func TestExamplesValidate(t *testing.T) {
	for _, f := range []string{"../../deploy/examples/talos.yaml", "../../deploy/examples/loopback.yaml"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("example %s missing: %v", f, err)
		}
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestSeedExample(t *testing.T) {
	cfg, err := Load("../../deploy/examples/talos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var binds []string
	for _, f := range cfg.Frontends {
		binds = append(binds, f.Bind.String())
	}
	if diff := cmp.Diff([]string{"192.168.66.160:6443", "192.168.66.160:50000"}, binds); diff != "" {
		t.Errorf("binds (-want +got):\n%s", diff)
	}
	k8s, _ := cfg.Backend("k8s_controlplane")
	if k8s.Health.Type != CheckHTTPS || k8s.Health.Path != "/readyz" || k8s.Health.Fall != 3 || k8s.Health.Rise != 2 || k8s.Health.Interval != 2*time.Second {
		t.Errorf("k8s health = %+v, want https /readyz inter 2s fall 3 rise 2", k8s.Health)
	}
	// Talos rejects anonymous checks: the example must carry credentials.
	talos, _ := cfg.Backend("talos_controlplane")
	if k8s.Health.TLS.Kubeconfig == "" || talos.Health.TLS.Talosconfig == "" || !k8s.PanicRouting {
		t.Errorf("k8s tls = %+v, talos tls = %+v, panic routing %t: want a kubeconfig, a talosconfig and panic routing", k8s.Health.TLS, talos.Health.TLS, k8s.PanicRouting)
	}
	if len(k8s.Servers) != 3 || k8s.Servers[2].Address != netip.MustParseAddrPort("192.168.66.163:6443") {
		t.Errorf("k8s servers = %+v", k8s.Servers)
	}
	if cfg.VIPs[0].Address != netip.MustParsePrefix("192.168.66.160/24") {
		t.Errorf("vip = %v", cfg.VIPs[0].Address)
	}
	if len(cfg.Cluster.Nodes) != 2 {
		t.Errorf("nodes = %+v", cfg.Cluster.Nodes)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backends[0]
	want := Backend{
		Name: "cp", Balance: RoundRobin, Retries: DefaultRetries, CloseOnDown: true, PanicRouting: true,
		Health: HealthCheck{Type: CheckTCP, Interval: DefaultInterval, Timeout: DefaultCheckTimeout,
			Fall: DefaultFall, Rise: DefaultRise, Jitter: DefaultJitter},
		Servers:     []Server{{Name: "cp1", Address: netip.MustParseAddrPort("127.0.0.2:6443"), Weight: 1}},
		PassiveFall: DefaultPassiveFall,
	}
	if diff := cmp.Diff(want, b, cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y })); diff != "" {
		t.Errorf("backend (-want +got):\n%s", diff)
	}
	wantT := Timeouts{Connect: DefaultConnectTimeout, ClientIdle: DefaultIdleTimeout, ServerIdle: DefaultIdleTimeout, Drain: DefaultDrain}
	if diff := cmp.Diff(wantT, cfg.Timeouts); diff != "" {
		t.Errorf("timeouts (-want +got):\n%s", diff)
	}
	if cfg.MaxConn != DefaultMaxConn || cfg.Admin.Socket != DefaultAdminSocket || !cfg.Log.Connections {
		t.Errorf("globals = maxconn %d admin %q log %+v", cfg.MaxConn, cfg.Admin.Socket, cfg.Log)
	}
	if cfg.Fingerprint == "" {
		t.Error("no fingerprint")
	}
}

func TestErrorsNamePathAndLine(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error text
	}{
		{"unknown key", minimal + "  - name: x\n    servrs: []\n", []string{`backends[1].servrs (line 12): unknown key "servrs"`}},
		{"unknown top key", "frontend: []\n" + minimal, []string{`frontend (line 1): unknown key "frontend"`}},
		{"bad bind", strings.Replace(minimal, "127.0.0.1:6443", "127.0.0.1", 1), []string{`frontends[0].bind (line 4): "127.0.0.1" is not ADDRESS:PORT`}},
		{"bad server", strings.Replace(minimal, "127.0.0.2:6443", "cp1.example:6443", 1), []string{`backends[0].servers[0].address (line 10)`}},
		{"missing backend", strings.Replace(minimal, "backend: cp", "backend: nope", 1), []string{`frontends[0].backend (line 5): no backend named "nope"`}},
		{"bad duration", minimal + "timeouts:\n  connect: 5\n", []string{`timeouts.connect (line 12): "5" is not a duration`}},
		{"several at once", strings.Replace(strings.Replace(minimal, "backend: cp", "backend: nope", 1), "127.0.0.2:6443", "x", 1),
			[]string{"frontends[0].backend (line 5)", "backends[0].servers[0].address (line 10)"}},
		{"cluster without key", minimal + "cluster:\n  nodes:\n    - {name: lb1, address: 127.0.0.1}\n", []string{"cluster.key_file", "halb keygen"}},
		{"vip without cluster", minimal + "vips:\n  - address: 10.0.0.1/24\n    interface: eth0\n", []string{"vips (line 11): a VIP needs a cluster"}},
		{"node interface too long", minimal + "cluster:\n  insecure_gossip: true\n  nodes:\n    - {name: a, address: 127.0.0.1, interface: enp0s31f6-uplink0}\n",
			[]string{`cluster.nodes[0].interface`, `"enp0s31f6-uplink0": Linux interface names have at most 15 characters`}},
		{"type error", minimal + "maxconn: lots\n", []string{"maxconn (line 11): wrong value type: cannot unmarshal !!str `lots` into int"}},
		{"empty", "", []string{"config is empty"}},
		{"duplicate key", minimal + "maxconn: 1\nmaxconn: 2\n", []string{"maxconn (line 12): key appears twice"}},
		{"quorum pair", minimal + "cluster:\n  insecure_gossip: true\n  quorum: true\n  nodes:\n    - {name: a, address: 127.0.0.1}\n    - {name: b, address: 127.0.0.2}\n", []string{"cluster.quorum (line 13): needs at least 3 nodes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestBareVIPIsHostRoute(t *testing.T) {
	doc := minimal + "cluster:\n  insecure_gossip: true\n  nodes:\n    - {name: a, address: 127.0.0.1}\nvips:\n  - {address: 10.0.0.1, interface: eth0}\n"
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VIPs[0].Address.String(); got != "10.0.0.1/32" {
		t.Errorf("vip = %s, want 10.0.0.1/32", got)
	}
}

// testHash is a bcrypt hash of "test" at the lowest cost.
const testHash = "$2a$04$kIY.41ULia24Wx.9YrqGZeB7U9VieFFUr4BC1vmphcBNel/7sOxpa"

func TestStats(t *testing.T) {
	ok := minimal + "stats:\n  bind: 127.0.0.1:9600\n  allow: [172.16.25.0/24, 127.0.0.1]\n  users:\n    - {name: admin, password_hash: \"" + testHash + "\"}\n"
	cfg, err := Parse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stats.Bind.Port() != 9600 || len(cfg.Stats.Allow) != 2 || cfg.Stats.Allow[1].String() != "127.0.0.1/32" || cfg.Stats.Refresh != DefaultStatsRefresh {
		t.Errorf("stats = %+v", cfg.Stats)
	}
	plain := strings.Replace(ok, testHash, "your-secure-password", 1)
	_, err = Parse([]byte(plain))
	if err == nil || !strings.Contains(err.Error(), "stats.users[0].password_hash (line 15): not a bcrypt hash") {
		t.Fatalf("plaintext password: %v", err)
	}
	if strings.Contains(err.Error(), "your-secure-password") {
		t.Errorf("the error echoes the password: %v", err)
	}
}
