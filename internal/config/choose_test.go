package config

import (
	"strings"
	"testing"
)

// An enumerated field left empty takes its default, and a wrong value is
// refused with the list of values the field takes, so the operator need
// not look them up.
func TestChoicesDefaultAndListTheAlternatives(t *testing.T) {
	cluster := minimal + "cluster:\n  insecure_gossip: true\n  nodes:\n    - {name: a, address: 127.0.0.1}\n"
	cfg, err := Parse([]byte(cluster))
	if err != nil {
		t.Fatal(err)
	}
	c, h := cfg.Cluster, cfg.Backends[0].Health
	if c.Profile != "lan" || c.Policy != Preempt || c.Eligibility != "all_frontends" ||
		cfg.Backends[0].Balance != RoundRobin || h.Type != CheckTCP {
		t.Fatalf("defaults: profile %q policy %q eligibility %q balance %q check %q",
			c.Profile, c.Policy, c.Eligibility, cfg.Backends[0].Balance, h.Type)
	}

	tests := []struct{ name, doc, want string }{
		{"profile", cluster + "  profile: slow\n", `cluster.profile (line 15): "slow": want lan or fast`},
		{"policy", cluster + "  policy: random\n", `cluster.policy (line 15): "random": want preempt or sticky`},
		{"eligibility", cluster + "  eligibility: most\n", `cluster.eligibility (line 15): "most": want all_frontends or any_frontend`},
		{"balance", minimal + "    balance: random\n", `backends[0].balance (line 11): "random": want roundrobin, leastconn or source`},
		{"check type", minimal + "    health: {type: udp}\n", `backends[0].health.type (line 11): "udp": want tcp, tls, http or https`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
