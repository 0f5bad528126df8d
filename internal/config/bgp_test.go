package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// bgpCluster is minimal plus a three-node cluster.
const bgpCluster = minimal + `cluster:
  insecure_gossip: true
  nodes:
    - {name: lb1, address: 192.168.66.151}
    - {name: lb2, address: 192.168.66.152}
    - {name: lb3, address: 192.168.66.153}
`

const bgpSection = `bgp:
  local_asn: 64512
  hold_time: 6s
  peers:
    - address: 192.168.66.1
      asn: 64500
      password_file: /etc/halb/bgp-r1.password
    - address: 192.168.66.2
      asn: 4200000001
      port: 1179
      hold_time: 30s
    - address: 192.168.66.3
      asn: 64500
      keepalive: 1s
`

func TestBGPConfig(t *testing.T) {
	doc := bgpCluster + bgpSection + `vips:
  - address: 192.168.66.160/24
    interface: eth0
  - address: 10.70.0.1
    announce: bgp
    communities: ["64512:100", no-export]
    local_pref: 200
    med: 0
    prefer: lb2
  - address: 2001:db8::10/128
    announce: bgp
    interface: dummy0
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := &BGP{
		LocalASN: 64512,
		Peers: []BGPPeer{
			{Address: netip.MustParseAddr("192.168.66.1"), ASN: 64500, Port: 179, PasswordFile: "/etc/halb/bgp-r1.password", HoldTime: 6 * time.Second, Keepalive: 2 * time.Second},
			{Address: netip.MustParseAddr("192.168.66.2"), ASN: 4200000001, Port: 1179, HoldTime: 30 * time.Second, Keepalive: 10 * time.Second},
			{Address: netip.MustParseAddr("192.168.66.3"), ASN: 64500, Port: 179, HoldTime: 6 * time.Second, Keepalive: time.Second},
		},
	}
	addrs := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(want, cfg.BGP, addrs); diff != "" {
		t.Errorf("bgp (-want +got):\n%s", diff)
	}
	type ann struct {
		Announce    Announce
		Interface   string
		Communities []uint32
		LocalPref   *uint32
		MED         *uint32
		Prefer      string
	}
	var got []ann
	for _, v := range cfg.VIPs {
		got = append(got, ann{v.Announce, v.Interface, v.Communities, v.LocalPref, v.MED, v.Prefer})
	}
	u := func(n uint32) *uint32 { return &n }
	wantVIPs := []ann{
		{Announce: AnnounceARP, Interface: "eth0"},
		{Announce: AnnounceBGP, Interface: "lo", Communities: []uint32{64512<<16 | 100, 0xFFFFFF01}, LocalPref: u(200), MED: u(0), Prefer: "lb2"},
		{Announce: AnnounceBGP, Interface: "dummy0"},
	}
	if diff := cmp.Diff(wantVIPs, got); diff != "" {
		t.Errorf("vips (-want +got):\n%s", diff)
	}
	if cfg.VIPs[1].Address != netip.MustParsePrefix("10.70.0.1/32") {
		t.Errorf("bgp vip address = %s, want 10.70.0.1/32", cfg.VIPs[1].Address)
	}
}

func TestBGPConfigErrors(t *testing.T) {
	vip := func(extra string) string {
		return "vips:\n  - address: 10.70.0.1\n    announce: bgp\n" + extra
	}
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"no cluster", minimal + bgpSection, []string{"bgp (line 11): BGP announces the VIPs of a cluster"}},
		{"no asn", bgpCluster + "bgp:\n  peers:\n    - {address: 192.168.66.1, asn: 64500}\n", []string{"bgp.local_asn (line 17): local_asn is required"}},
		{"reserved asn", bgpCluster + strings.Replace(bgpSection, "64512", "23456", 1), []string{"bgp.local_asn (line 18): 23456 is AS_TRANS"}},
		{"asn too big", bgpCluster + strings.Replace(bgpSection, "4200000001", "4294967295", 1), []string{"bgp.peers[1].asn (line 25): 4294967295: want 1-4294967294"}},
		{"no peers", bgpCluster + "bgp:\n  local_asn: 64512\n", []string{"bgp.peers (line 17): at least one peer"}},
		{"peer is a host name", bgpCluster + strings.Replace(bgpSection, "192.168.66.1\n", "router1.example\n", 1), []string{`bgp.peers[0].address (line 21): "router1.example" is not an IP address`}},
		{"peer twice", bgpCluster + strings.Replace(bgpSection, "192.168.66.3", "192.168.66.1", 1), []string{"bgp.peers[2].address (line 28): 192.168.66.1 is also bgp.peers[0]"}},
		{"peer is a node", bgpCluster + strings.Replace(bgpSection, "192.168.66.3", "192.168.66.152", 1), []string{`bgp.peers[2].address (line 28): 192.168.66.152 is node "lb2"'s own address`}},
		{"short hold", bgpCluster + strings.Replace(bgpSection, "hold_time: 6s", "hold_time: 2s", 1), []string{"bgp.hold_time (line 19): 2s: want 3s to 65535s"}},
		{"fractional hold", bgpCluster + strings.Replace(bgpSection, "hold_time: 30s", "hold_time: 4500ms", 1), []string{"bgp.peers[1].hold_time (line 27): 4.5s: BGP counts in whole seconds"}},
		{"keepalive not shorter", bgpCluster + strings.Replace(bgpSection, "keepalive: 1s", "keepalive: 6s", 1), []string{"bgp.peers[2].keepalive (line 30): 6s is not shorter than hold_time 6s"}},
		{"router id shared", bgpCluster + strings.Replace(bgpSection, "local_asn: 64512", "local_asn: 64512\n  router_id: 10.0.0.1", 1), []string{"bgp.router_id (line 19): every node would use 10.0.0.1"}},
		{"listen port", bgpCluster + strings.Replace(bgpSection, "local_asn: 64512", "local_asn: 64512\n  listen_port: 70000", 1), []string{"bgp.listen_port (line 19): 70000"}},
		{"bad community", bgpCluster + bgpSection + vip("    communities: [\"64512:100\", \"4200000000:1\", nope]\n"), []string{
			`vips[0].communities[1] (line 34): "4200000000:1": both halves`, `vips[0].communities[2] (line 34): "nope" is not ASN:VALUE`}},
		{"bgp vip without bgp", bgpCluster + vip(""), []string{"vips[0].announce (line 19): bgp needs a bgp section"}},
		{"bad mode", bgpCluster + "vips:\n  - {address: 10.70.0.1, interface: eth0, announce: ospf}\n", []string{`vips[0].announce (line 18): "ospf": want arp or bgp`}},
		{"subnet vip", bgpCluster + bgpSection + "vips:\n  - address: 10.70.0.1/24\n    announce: bgp\n", []string{"vips[0].address (line 32): 10.70.0.1/24: announce: bgp announces the VIP as a host route; write 10.70.0.1 or 10.70.0.1/32"}},
		{"garp with bgp", bgpCluster + bgpSection + vip("    garp_count: 3\n"), []string{"vips[0].garp_count (line 34): announce: bgp sends no gratuitous ARP"}},
		{"med with arp", bgpCluster + "vips:\n  - {address: 10.70.0.1, interface: eth0, med: 5}\n", []string{"vips[0].med (line 18): only announce: bgp uses med"}},
		{"prefer unknown", bgpCluster + bgpSection + vip("    prefer: lb9\n"), []string{`vips[0].prefer (line 34): no node named "lb9"`}},
		{"med negative", bgpCluster + bgpSection + vip("    med: -1\n"), []string{"vips[0].med (line 34): -1: want 0-4294967295"}},
		{"ipv6 nodes", minimal + "cluster:\n  insecure_gossip: true\n  nodes:\n    - {name: a, address: \"2001:db8::1\"}\n" + bgpSection, []string{`cluster.nodes[0].address (line 14): 2001:db8::1 is IPv6, so it cannot be node "a"'s BGP router id`}},
		{"unknown key", bgpCluster + strings.Replace(bgpSection, "asn: 64500\n      password_file", "asn: 64500\n      pasword_file", 1), []string{`bgp.peers[0].pasword_file (line 23): unknown key`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]uint32{"0:0": 0, "64512:100": 64512<<16 | 100, "65535:65535": 0xFFFFFFFF, "no-export": 0xFFFFFF01, "graceful-shutdown": 0xFFFF0000} {
		if got, err := ParseCommunity(in); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1", "1:", ":1", "65536:1", "1:65536", "-1:1", "a:b", "1:2:3"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) succeeded", in)
		}
	}
}
