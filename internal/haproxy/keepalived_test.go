package haproxy

import (
	"errors"
	"net/netip"
	"os"
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
	for _, want := range []string{":14: warning: advert_int", ":21: warning: authentication", ":28: warning: track_script", ":5: warning: vrrp_script"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("warnings lack %q:\n%s", want, all.String())
		}
	}
	if strings.Contains(all.String(), "s3cr3tpw") {
		t.Fatal("auth_pass leaked")
	}
}

func TestImportWithKeepalived(t *testing.T) {
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKeepalived([]byte(seedKeepalived))
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{Name: "lb1", Address: netip.MustParseAddr("192.168.66.151")},
		{Name: "lb2", Address: netip.MustParseAddr("192.168.66.152")},
	}
	res, err := Import(data, Options{Nodes: nodes, Keepalived: k, KeepalivedSource: "ka.conf"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.YAML)
	}
	if len(c.VIPs) != 1 || c.VIPs[0].Address != netip.MustParsePrefix("192.168.66.160/25") || c.VIPs[0].Interface != "ens19" {
		t.Errorf("vips = %+v, want keepalived's prefix and device", c.VIPs)
	}
	if c.Cluster.Policy != config.Sticky || c.Cluster.PreemptDelay != 15*time.Second {
		t.Errorf("policy %s delay %s, want sticky 15s (nopreempt, preempt_delay 15)", c.Cluster.Policy, c.Cluster.PreemptDelay)
	}
	// unicast_src_ip names lb1, so keepalived's priority is lb1's.
	if c.Cluster.Nodes[0].Priority != 150 || c.Cluster.Nodes[1].Priority != config.DefaultPriority {
		t.Errorf("priorities %d, %d; want 150 and the default", c.Cluster.Nodes[0].Priority, c.Cluster.Nodes[1].Priority)
	}
	for _, w := range res.Warnings {
		if strings.Contains(w.Message, "prefix length /24 assumed") {
			t.Errorf("assumed a prefix although keepalived gave one: %s", w.Format("f"))
		}
	}
	if !warningAt(res.Warnings, 14, "ka.conf:14: warning: advert_int") {
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
	}
	for _, tt := range tests {
		_, err := ParseKeepalived([]byte(tt.in))
		var es Errors
		if !errors.As(err, &es) || es[0].Line != tt.line {
			t.Errorf("%q: err = %v, want an error at line %d", tt.in, err, tt.line)
		}
	}
}

func FuzzParseKeepalived(f *testing.F) {
	f.Add([]byte(seedKeepalived))
	f.Add([]byte("vrrp_instance a { virtual_ipaddress { 10.0.0.1 dev } } }"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeepalived(data)
		if err != nil {
			return
		}
		// Whatever keepalived said must still import cleanly.
		_, _ = Import([]byte(tcpPair("server s 10.1.1.1:6443")), Options{Nodes: []Node{{Name: "a", Address: netip.MustParseAddr("10.1.1.2")}}, Keepalived: k})
	})
}
