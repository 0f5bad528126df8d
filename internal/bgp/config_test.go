package bgp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

func TestConfigFor(t *testing.T) {
	cfg, err := config.Parse([]byte(`
frontends:
  - {name: api, bind: 10.70.0.1:6443, backend: cp}
backends:
  - name: cp
    servers: [{name: cp1, address: 192.168.66.161:6443}]
cluster:
  insecure_gossip: true
  nodes:
    - {name: lb1, address: 192.168.66.151}
    - {name: lb2, address: 192.168.66.152}
bgp:
  local_asn: 64512
  peers:
    - {address: 192.168.66.1, asn: 64500, password_file: /etc/halb/r1.password}
vips:
  - {address: 10.70.0.1, announce: bgp, med: 5, communities: ["64512:7"], prefer: lb1}
  - {address: 10.70.0.2, announce: bgp}
`))
	if err != nil {
		t.Fatal(err)
	}
	lb2, _ := cfg.Cluster.Node("lb2")
	got, err := ConfigFor(cfg.BGP, lb2)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	want := Config{
		LocalASN: 64512, RouterID: a("192.168.66.152"), NextHop: a("192.168.66.152"),
		Peers: []Peer{{Address: a("192.168.66.1"), ASN: 64500, Port: 179, Local: a("192.168.66.152"),
			PasswordFile: "/etc/halb/r1.password", HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("speaker config of lb2 (-want +got):\n%s", diff)
	}

	med := func(r Route) any {
		if r.MED == nil {
			return nil
		}
		return *r.MED
	}
	tests := []struct {
		vip  int
		node string
		want any
	}{
		{0, "lb1", uint32(5)},             // the preferred node keeps the VIP's MED
		{0, "lb2", uint32(5 + BackupMED)}, // a backup loses by BackupMED
		{1, "lb2", nil},                   // no prefer, no MED: plain ECMP
	}
	for _, tt := range tests {
		r := RouteFor(cfg.VIPs[tt.vip], tt.node)
		if r.Prefix != cfg.VIPs[tt.vip].Address || med(r) != tt.want {
			t.Errorf("RouteFor(vip %d, %s) = %s med %v, want %s med %v", tt.vip, tt.node, r.Prefix, med(r), cfg.VIPs[tt.vip].Address, tt.want)
		}
	}
	if r := RouteFor(cfg.VIPs[0], "lb2"); len(r.Communities) != 1 || r.Communities[0] != 64512<<16|7 {
		t.Errorf("communities = %v", r.Communities)
	}
}
