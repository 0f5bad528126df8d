package cli

import (
	"net/netip"
	"strings"
	"testing"

	"halb/internal/config"
)

func TestPickNode(t *testing.T) {
	addr := netip.MustParseAddr
	cluster := &config.Cluster{Nodes: []config.Node{
		{Name: "lb1", Address: addr("192.0.2.151")},
		{Name: "lb2", Address: addr("192.0.2.152")},
		{Name: "lb3.example.net", Address: addr("2001:db8::153")},
	}}
	oneHost := &config.Cluster{Nodes: []config.Node{
		{Name: "a", Address: addr("127.0.0.1")},
		{Name: "b", Address: addr("127.0.0.1")},
	}}
	tests := []struct {
		name     string
		flag     string
		env      string
		local    []netip.Addr
		hostname string
		cluster  *config.Cluster
		want     string
		wantErr  string
	}{
		{name: "flag wins", flag: "lb2", env: "lb1", local: []netip.Addr{addr("192.0.2.151")}, hostname: "lb1", cluster: cluster, want: "lb2"},
		{name: "flag is not checked here", flag: "nope", cluster: cluster, want: "nope"},
		{name: "environment before addresses", env: "lb2", local: []netip.Addr{addr("192.0.2.151")}, hostname: "lb1", cluster: cluster, want: "lb2"},
		{name: "local address before host name", local: []netip.Addr{addr("10.0.0.5"), addr("192.0.2.152")}, hostname: "lb1", cluster: cluster, want: "lb2"},
		{name: "IPv4-mapped local address", local: []netip.Addr{addr("::ffff:192.0.2.151")}, hostname: "x", cluster: cluster, want: "lb1"},
		{name: "IPv6 local address", local: []netip.Addr{addr("2001:db8::153")}, cluster: cluster, want: "lb3.example.net"},
		{name: "short host name", hostname: "lb1", cluster: cluster, want: "lb1"},
		{name: "FQDN host, short entry", hostname: "lb2.example.net", cluster: cluster, want: "lb2"},
		{name: "FQDN host, FQDN entry", hostname: "lb3.example.net", cluster: cluster, want: "lb3.example.net"},
		{name: "short host, FQDN entry does not match", hostname: "lb3", cluster: cluster,
			wantErr: `no entry of cluster.nodes (lb1, lb2, lb3.example.net) has an address of this host or its host name "lb3": pass --node NAME or set HALB_NODE`},
		{name: "several local, host name decides", local: []netip.Addr{addr("127.0.0.1")}, hostname: "b", cluster: oneHost, want: "b"},
		{name: "several local, undecided", local: []netip.Addr{addr("127.0.0.1")}, hostname: "c", cluster: oneHost,
			wantErr: "cluster.nodes a, b all have addresses on this host: pass --node NAME or set HALB_NODE"},
		{name: "no cluster: host name", hostname: "lb9.example.net", want: "lb9.example.net"},
		{name: "no cluster, no host name", wantErr: "no host name"},
		{name: "nothing matches, no host name", local: []netip.Addr{addr("10.0.0.5")}, cluster: cluster, wantErr: `host name ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickNode(tt.flag, tt.env, tt.local, tt.hostname, tt.cluster)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pickNode = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("pickNode = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
