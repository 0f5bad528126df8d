package haproxy

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

// A keepalived.conf as the seed guide's "redundant load balancers" advice
// would have it on lb1.
const seedKeepalived = `! Configuration File for keepalived
global_defs {
   router_id lb1
}
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
    interval 2
}
vrrp_instance VI_1 {
    state BACKUP
    interface ens18
    virtual_router_id 51
    priority 150
    advert_int 1
    nopreempt
    preempt_delay 15
    unicast_src_ip 192.168.66.151
    unicast_peer {
        192.168.66.152
    }
    authentication {
        auth_type PASS
        auth_pass s3cr3tpw
    }
    virtual_ipaddress {
        192.168.66.160/25 dev ens19
    }
    track_script {
        chk_haproxy
    }
}
`

func TestParseKeepalived(t *testing.T) {
	k, err := ParseKeepalived([]byte(seedKeepalived))
	if err != nil {
		t.Fatal(err)
	}
	want := []KeepalivedVIP{{Line: 26, Prefix: netip.MustParsePrefix("192.168.66.160/25"), Interface: "ens19"}}
	if diff := cmp.Diff(want, k.VIPs, netipEqual()); diff != "" {
		t.Errorf("vips (-want +got):\n%s", diff)
	}
	if k.Priority == nil || *k.Priority != 150 || !k.NoPreempt || k.PreemptDelay == nil || *k.PreemptDelay != 15*time.Second || k.SrcIP != netip.MustParseAddr("192.168.66.151") {
		t.Errorf("instance: %+v", k)
	}
	var all strings.Builder
	for _, w := range k.Warnings {
		all.WriteString(w.Format("keepalived.conf") + "\n")
	}
	for _, want := range []string{":14: dropped, no effect: advert_int", ":21: dropped, no effect: authentication", ":28: changes behaviour: track_script", ":5: changes behaviour: vrrp_script"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("warnings lack %q:\n%s", want, all.String())
		}
	}
	if strings.Contains(all.String(), "s3cr3tpw") {
		t.Fatal("auth_pass leaked")
	}
}

func TestImportWithKeepalived(t *testing.T) {
	res, c := importSeedWith(t, seedKeepalived)
	if len(c.VIPs) != 1 || c.VIPs[0].Address != netip.MustParsePrefix("192.168.66.160/25") || c.VIPs[0].Interface != "ens19" {
		t.Errorf("vips = %+v, want keepalived's prefix and device", c.VIPs)
	}
	if c.Cluster.Policy != config.Sticky || c.Cluster.PreemptDelay != 15*time.Second {
		t.Errorf("policy %s delay %s, want sticky 15s (nopreempt, preempt_delay 15)", c.Cluster.Policy, c.Cluster.PreemptDelay)
	}
	// unicast_src_ip names lb1, a BACKUP at 150, so keepalived's priority
	// is lb1's and lb2 is taken to be the MASTER, above it.
	if c.Cluster.Nodes[0].Priority != 150 || c.Cluster.Nodes[1].Priority != 160 {
		t.Errorf("priorities %d, %d; want 150 and 160", c.Cluster.Nodes[0].Priority, c.Cluster.Nodes[1].Priority)
	}
	for _, w := range res.Warnings {
		if strings.Contains(w.Message, "prefix length /24 assumed") {
			t.Errorf("assumed a prefix although keepalived gave one: %s", w.Format("f"))
		}
	}
	if !warningAt(res.Warnings, 14, "ka.conf:14: dropped, no effect: advert_int") {
		t.Errorf("keepalived warnings not carried with their file: %v", res.Warnings)
	}
}

func TestParseKeepalivedErrors(t *testing.T) {
	tests := []struct {
		in   string
		line int
	}{
		{"vrrp_instance VI_1 {\n  priority 100\n", 1},
		{"}\n", 1},
		{"global_defs {\n}\n", 0},
		{"vrrp_instance V {\n  virtual_ipaddress {\n    not-an-ip\n  }\n}\n", 3},
		{"vrrp_instance V {\n  priority 300\n}\n", 2},
		// Found by fuzzing: an interface Linux cannot have was imported,
		// and only the imported config failed to validate.
		{"vrrp_instance V {\n  virtual_ipaddress {\n    10.0.0.5 dev enp0s31f6-uplink0\n  }\n}\n", 3},
		{"vrrp_instance V {\n  interface enp0s31f6-uplink0\n  virtual_ipaddress {\n    10.0.0.5\n  }\n}\n", 2},
		// Names the kernel refuses though short: an alias label, a path.
		{"vrrp_instance V {\n  interface eth0:1\n  virtual_ipaddress {\n    10.0.0.5\n  }\n}\n", 2},
		{"vrrp_instance V {\n  virtual_ipaddress {\n    10.0.0.5 dev ..\n  }\n}\n", 3},
		{"vrrp_instance V {\n  virtual_ipaddress {\n    10.0.0.5 dev a/b\n  }\n}\n", 3},
		// Found by fuzzing: a VIP no host can hold, which config refuses.
		{"vrrp_instance V {\n  virtual_ipaddress {\n    ::\n    224.0.0.5\n  }\n}\n", 3},
	}
	for _, tt := range tests {
		_, err := ParseKeepalived([]byte(tt.in))
		var es Errors
		if !errors.As(err, &es) || es[0].Line != tt.line {
			t.Errorf("%q: err = %v, want an error at line %d", tt.in, err, tt.line)
		}
	}
}

func TestParseKeepalivedReportsEveryError(t *testing.T) {
	in := "vrrp_instance V {\n" +
		"  interface eth0:1\n" +
		"  priority 300\n" +
		"  preempt_delay soon\n" +
		"  unicast_src_ip nowhere\n" +
		"  virtual_ipaddress {\n" +
		"    10.0.0.5\n" +
		"    not-an-ip\n" +
		"    10.0.0.6 dev a/b\n" +
		"  }\n" +
		"}\n"
	_, err := ParseKeepalived([]byte(in))
	if diff := cmp.Diff([]int{2, 3, 4, 5, 8, 9}, errorLines(t, err)); diff != "" {
		t.Fatalf("error lines (-want +got):\n%s\nerrors:\n%v", diff, err)
	}
}

// errorLines returns the line of each error in err, which must be Errors.
func errorLines(t *testing.T, err error) []int {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v, want Errors", err)
	}
	var lines []int
	for _, e := range es {
		lines = append(lines, e.Line)
	}
	return lines
}

// FuzzParseKeepalived: no keepalived.conf may crash the parser; a refusal
// points at a line of the file; what is accepted imports, together with an
// haproxy.cfg binding its VIP, into a config halb accepts.
func FuzzParseKeepalived(f *testing.F) {
	f.Add([]byte(seedKeepalived))
	f.Add([]byte("vrrp_instance a { virtual_ipaddress { 10.0.0.1 dev } } }"))
	f.Add([]byte("vrrp_instance a {\n priority 255\n unicast_src_ip 10.1.1.2\n virtual_ipaddress {\n  2001:db8::5/64 dev eth1\n }\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeepalived(data)
		lines := bytes.Count(data, []byte("\n")) + 1
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			for _, e := range es {
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("error %v at line %d, outside the input's %d lines", e, e.Line, lines)
				}
			}
			return
		}
		for _, v := range k.VIPs {
			if !v.Prefix.IsValid() || v.Line < 1 || v.Line > lines {
				t.Fatalf("unusable VIP %+v", v)
			}
		}
		bind := "10.1.1.10"
		if len(k.VIPs) > 0 {
			bind = netip.AddrPortFrom(k.VIPs[0].Prefix.Addr(), 6443).String()
		} else {
			bind += ":6443"
		}
		cfg := strings.Replace(tcpPair("server s 10.1.1.1:6443"), "10.1.1.10:6443", bind, 1)
		nodes := []Node{{Name: "a", Address: netip.MustParseAddr("10.1.1.2")}, {Name: "b", Address: netip.MustParseAddr("10.1.1.3")}}
		res, err := Import([]byte(cfg), Options{Nodes: nodes, Keepalived: k})
		if err != nil {
			t.Fatalf("import of a plain haproxy.cfg failed with keepalived %+v: %v\n%s", k, err, cfg)
		}
		if _, err := config.Parse(res.YAML); err != nil {
			t.Fatalf("imported YAML does not validate: %v\n%s", err, res.YAML)
		}
	})
}
