package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// load writes doc to a file and loads it, as `halb check` and `halb run`
// both do.
func load(t *testing.T, doc string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "halb.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

// cluster1 is a one-node cluster section to append to minimal.
const cluster1 = "cluster:\n  insecure_gossip: true\n  nodes: [{name: a, address: 10.0.0.1}]\n"

func stats(lines string) string {
	return "stats:\n  bind: 127.0.0.1:9600\n  users:\n    - {name: admin, password_hash: \"" + testHash + "\"}\n" + lines
}

// Every config `halb run` would refuse at start (or that could never
// work) is refused by Load, hence by `halb check`, with the field named.
func TestLoadRefusesWhatRunRefuses(t *testing.T) {
	web := func(path string) string {
		return strings.Replace(minimal, "    servers:", "    health: {type: http, path: "+path+"}\n    servers:", 1)
	}
	for _, tt := range []struct {
		name, doc, path, want string
	}{
		// D7: run refused these at start, check passed them.
		{"path naming a host", web("//healthz"), "backends[0].health.path", "names a host"},
		{"path with a bad escape", web("/%zz"), "backends[0].health.path", "invalid URL escape"},
		{"path with a control character", web(`"/heal\x01thz"`), "backends[0].health.path", "control character"},
		{"malformed bcrypt hash", minimal + "stats:\n  bind: 127.0.0.1:9600\n  users: [{name: a, password_hash: \"$2a$10$short\"}]\n", "stats.users[0].password_hash", "not a bcrypt hash"},
		{"duplicate stats user", minimal + stats("    - {name: admin, password_hash: \""+testHash+"\"}\n"), "stats.users[1].name", "also stats.users[0]"},
		{"stats on a frontend's port", minimal + strings.Replace(stats(""), "127.0.0.1:9600", "127.0.0.1:6443", 1), "stats.bind", `clashes with frontend "api"`},
		{"metrics on the stats port", minimal + stats("  metrics_bind: 127.0.0.1:9600\n"), "stats.metrics_bind", "clashes with stats.bind"},
		{"mapped IPv6 beside IPv4", strings.Replace(minimal, "backends:", "  - {name: b, bind: \"[::ffff:127.0.0.1]:6443\", backend: cp}\nbackends:", 1), "frontends[1].bind", `clashes with frontend "api"`},
		{"wildcard beside an address", minimal + stats("  metrics_bind: 0.0.0.0:6443\n"), "stats.metrics_bind", `clashes with frontend "api"`},
		{"frontend on the gossip port", strings.Replace(minimal, "127.0.0.1:6443", "10.0.0.1:7946", 1) + cluster1, "cluster.nodes[0].address", `clashes with frontend "api"`},
		// W10: sanity bounds.
		{"jitter not a number", strings.Replace(minimal, "    servers:", "    health: {jitter: .nan}\n    servers:", 1), "backends[0].health.jitter", "NaN"},
		{"interval of 100 years", strings.Replace(minimal, "    servers:", "    health: {interval: 876000h}\n    servers:", 1), "backends[0].health.interval", "too long: at most 24h"},
		{"idle timeout of 100 years", minimal + "timeouts: {client_idle: 876000h}\n", "timeouts.client_idle", "too long"},
		{"node address unspecified", minimal + strings.Replace(cluster1, "10.0.0.1", "0.0.0.0", 1), "cluster.nodes[0].address", "unspecified"},
		{"node address broadcast", minimal + strings.Replace(cluster1, "10.0.0.1", "255.255.255.255", 1), "cluster.nodes[0].address", "broadcast"},
		{"node address multicast", minimal + strings.Replace(cluster1, "10.0.0.1", "ff02::1", 1), "cluster.nodes[0].address", "multicast"},
		{"server address multicast", strings.Replace(minimal, "127.0.0.2:6443", "224.0.0.1:6443", 1), "backends[0].servers[0].address", "multicast"},
		{"server address unspecified", strings.Replace(minimal, "127.0.0.2:6443", "0.0.0.0:6443", 1), "backends[0].servers[0].address", "unspecified"},
		{"frontend on a multicast address", strings.Replace(minimal, "127.0.0.1:6443", "239.1.1.1:6443", 1), "frontends[0].bind", "multicast"},
		{"stats cert without key", minimal + stats("  tls: {cert_file: /etc/halb/stats.crt}\n"), "stats.tls", "cert_file and key_file go together"},
		{"stats port 0", minimal + strings.Replace(stats(""), "127.0.0.1:9600", "127.0.0.1:0", 1), "stats.bind", "port must be 1-65535"},
		{"witness multicast", minimal + cluster1 + "  witness: 224.0.0.1\n", "cluster.witness", "multicast"},
		{"VIP multicast", minimal + cluster1 + "vips: [{address: 224.0.0.5, interface: eth0}]\n", "vips[0].address", "multicast"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.doc)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Load = %v, want field errors", err)
			}
			for _, e := range es {
				if e.Path == tt.path && strings.Contains(e.Err.Error(), tt.want) && e.Line > 0 {
					return
				}
			}
			t.Fatalf("errors:\n%v\nwant one at %s with a line saying %q", err, tt.path, tt.want)
		})
	}
}

// Listeners on different addresses or ports, or IPv4 and IPv6 loopback,
// do not clash.
func TestListenersThatCoexist(t *testing.T) {
	doc := strings.Replace(minimal, "backends:", "  - {name: v6, bind: \"[::1]:6443\", backend: cp}\n  - {name: other, bind: 127.0.0.2:6443, backend: cp}\nbackends:", 1) +
		stats("  metrics_bind: 127.0.0.1:9601\n") + cluster1
	if _, err := Parse([]byte(doc)); err != nil {
		t.Fatal(err)
	}
}

func TestCheckInterface(t *testing.T) {
	for _, name := range []string{"", "eth0", "enp0s31f6", "bond0.100", "br-lan", "wg_0", "123456789012345"} {
		if err := CheckInterface(name); err != nil {
			t.Errorf("CheckInterface(%q) = %v, want nil", name, err)
		}
	}
	// D10: the kernel's dev_valid_name refuses all of these.
	for _, name := range []string{"eth 0", "eth0:1", "/", "..", ".", "a/b", "eth\t0", "eth0\n", "1234567890123456", "x\x00y"} {
		if err := CheckInterface(name); err == nil {
			t.Errorf("CheckInterface(%q) = nil, want an error", name)
		}
	}
	// And Load applies it to nodes and VIPs.
	doc := minimal + strings.Replace(cluster1, "10.0.0.1}", "10.0.0.1, interface: \"eth0:1\"}", 1) + "vips: [{address: 10.0.0.9/24, interface: \"eth 0\"}]\n"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "cluster.nodes[0].interface") || !strings.Contains(err.Error(), "vips[0].interface") {
		t.Fatalf("error %v, want both interfaces refused", err)
	}
}

// A backend whose name was refused leaves the frontend's reference
// dangling; the name is the one problem to report.
func TestNoFollowUpForARefusedBackendName(t *testing.T) {
	doc := strings.Replace(minimal, "  - name: cp\n    servers:", "  - servers:", 1)
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Path != "backends[0].name" {
		t.Fatalf("errors:\n%v\nwant only backends[0].name", err)
	}
}

func TestCheckLogLevel(t *testing.T) {
	for _, l := range []string{"debug", "info", "warn", "error"} {
		if err := CheckLogLevel(l); err != nil {
			t.Errorf("CheckLogLevel(%q) = %v", l, err)
		}
	}
	if err := CheckLogLevel("bogus"); err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
		t.Errorf("CheckLogLevel(bogus) = %v, want the valid levels named", err)
	}
}

// Load reads through smallfile: a device or FIFO is refused, not read.
func TestLoadRefusesNonRegularFiles(t *testing.T) {
	_, err := Load("/dev/zero")
	if err == nil || !strings.Contains(err.Error(), "/dev/zero") || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Load(/dev/zero) = %v, want a refusal naming the file", err)
	}
}

func TestStatsTLSLoads(t *testing.T) {
	cfg, err := load(t, minimal+stats("  tls: {cert_file: /etc/halb/stats.crt, key_file: /etc/halb/stats.key}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Stats.TLS; got == nil || *got != (StatsTLS{CertFile: "/etc/halb/stats.crt", KeyFile: "/etc/halb/stats.key"}) {
		t.Fatalf("stats.tls = %+v", got)
	}
}
