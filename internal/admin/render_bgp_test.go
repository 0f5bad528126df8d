package admin

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// TestRenderBGP: an operator sees per BGP VIP whether this node announces
// it and why, and each peer's session state.
func TestRenderBGP(t *testing.T) {
	s := healthyPair()
	s.BGP = &BGP{
		Peers: []BGPPeer{
			{Address: "192.168.66.1", ASN: 64512, State: "established", Since: at().Add(-time.Minute)},
			{Address: "192.168.66.2", ASN: 64513, State: "active"},
		},
		VIPs: []BGPVIP{
			{Address: "192.168.70.160", Interface: "lo", Mode: "bgp", Announced: true, Why: "eligible", Since: at().Add(-time.Minute)},
			{Address: "192.168.70.161", Interface: "lo", Mode: "bgp", Why: "maintenance", Draining: true, LastError: "add 192.168.70.161/32 to lo: boom"},
		},
	}
	var b bytes.Buffer
	Render(&b, s, false)
	out := b.String()
	for prefix, want := range map[string]string{
		"192.168.70.160": `^\s*192\.168\.70\.160\s+lo\s+bgp\s+announces\s+1m0s ago\s+eligible$`,
		"192.168.70.161": `^\s*192\.168\.70\.161\s+lo\s+bgp\s+withdrawn, draining\s+-\s+maintenance$`,
		"192.168.66.1 ":  `^\s*192\.168\.66\.1\s+64512\s+established\s+1m0s ago$`,
		"192.168.66.2 ":  `^\s*192\.168\.66\.2\s+64513\s+active\s+-$`,
		"last error":     `boom$`,
	} {
		if l := line(t, out, prefix); !regexp.MustCompile(want).MatchString(l) {
			t.Errorf("line %q does not match %s", l, want)
		}
	}
	var none bytes.Buffer
	Render(&none, healthyPair(), false)
	if bytes.Contains(none.Bytes(), []byte("BGP")) {
		t.Errorf("a node without bgp shows a BGP section:\n%s", none.String())
	}
}
