package cluster

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewValidates(t *testing.T) {
	good := Config{
		NodeName: "lb1",
		BindAddr: netip.MustParseAddr("127.0.0.1"),
		Port:     7946,
		Peers:    []netip.AddrPort{netip.MustParseAddrPort("127.0.0.2:7946")},
		Key:      make([]byte, 32),
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "16 byte key", change: func(c *Config) { c.Key = make([]byte, 16) }},
		{name: "24 byte key", change: func(c *Config) { c.Key = make([]byte, 24) }},
		{name: "insecure without key", change: func(c *Config) { c.Key, c.Insecure = nil, true }},
		{name: "fast profile", change: func(c *Config) { c.Profile = "fast" }},
		{name: "port 0", change: func(c *Config) { c.Port = 0 }},
		{name: "no name", change: func(c *Config) { c.NodeName = "" }, want: "node name is empty"},
		{name: "long name", change: func(c *Config) { c.NodeName = strings.Repeat("n", 129) }, want: "longer than 128"},
		{name: "no bind", change: func(c *Config) { c.BindAddr = netip.Addr{} }, want: "bind address"},
		{name: "bad port", change: func(c *Config) { c.Port = 70000 }, want: "port 70000"},
		{name: "peer without port", change: func(c *Config) {
			c.Peers = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 0)}
		}, want: "peer"},
		{name: "short key", change: func(c *Config) { c.Key = make([]byte, 10) }, want: "10 bytes"},
		{name: "no key", change: func(c *Config) { c.Key = nil }, want: "0 bytes"},
		{name: "key and insecure", change: func(c *Config) { c.Insecure = true }, want: "insecure"},
		{name: "bad profile", change: func(c *Config) { c.Profile = "wan" }, want: `profile "wan"`},
		{name: "negative join timeout", change: func(c *Config) { c.JoinTimeout = -time.Second }, want: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := New(cfg, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestMemberlistProfiles(t *testing.T) {
	for _, tt := range []struct {
		profile        string
		probe, timeout time.Duration
	}{
		{profile: "", probe: 200 * time.Millisecond, timeout: 100 * time.Millisecond},
		{profile: "lan", probe: 200 * time.Millisecond, timeout: 100 * time.Millisecond},
		{profile: "fast", probe: 100 * time.Millisecond, timeout: 50 * time.Millisecond},
	} {
		c, err := New(Config{NodeName: "lb1", BindAddr: netip.MustParseAddr("127.0.0.1"), Insecure: true, Profile: tt.profile}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mc := c.memberlistConfig(7946)
		if mc.ProbeInterval != tt.probe || mc.ProbeTimeout != tt.timeout {
			t.Errorf("profile %q: probe %s/%s, want %s/%s", tt.profile, mc.ProbeInterval, mc.ProbeTimeout, tt.probe, tt.timeout)
		}
		// Two nodes have no third for indirect probes; a node returning with a
		// new address must be accepted after a short time.
		if mc.IndirectChecks != 1 || mc.DeadNodeReclaimTime != 10*time.Second || mc.BindPort != 7946 || mc.AdvertisePort != 7946 {
			t.Errorf("profile %q: %+v", tt.profile, mc)
		}
		if mc.GossipVerifyIncoming || mc.GossipVerifyOutgoing {
			t.Errorf("insecure config verifies gossip")
		}
	}
}

// SetLocal works before Run, and a state too big for memberlist's 512-byte
// metadata keeps what the election needs (priority, health, held VIPs).
func TestSetLocalShrinksOversizeState(t *testing.T) {
	c, err := New(Config{NodeName: "lb1", BindAddr: netip.MustParseAddr("127.0.0.1"), Insecure: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := State{Priority: 100, Eligible: true, Holds: []string{"192.168.66.160"}, Holder: map[string]string{}, Fingerprint: "abc"}
	for i := range 40 {
		big.Holder[strings.Repeat("v", 10)+string(rune('a'+i))] = "lb1"
	}
	c.SetLocal(big)
	ms := c.Members()
	if len(ms) != 1 || !ms[0].Local || !ms[0].Alive {
		t.Fatalf("members before Run = %+v, want only the local node", ms)
	}
	want := big
	want.Holder = nil
	if diff := cmp.Diff(want, ms[0].State); diff != "" {
		t.Fatalf("local state (-want +got):\n%s", diff)
	}
	d := &delegate{c: c}
	meta := d.NodeMeta(MaxStateSize)
	got, err := DecodeState(meta)
	if err != nil {
		t.Fatalf("gossiped metadata: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("gossiped state (-want +got):\n%s", diff)
	}
}
