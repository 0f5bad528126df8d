package admin

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const bgpVIP = "192.168.70.160"

// bgpTrio is lb1 (this node) with lb2 and lb3, all announcing the BGP
// VIP, with one established session.
func bgpTrio() Snapshot {
	s := healthyPair()
	s.Members = append(s.Members, member("lb3", "192.168.66.153", 50, false, "lb1"))
	for i := range s.Members {
		s.Members[i].Holds = append(s.Members[i].Holds, bgpVIP)
	}
	s.Time = at()
	s.BGP = &BGP{
		Peers: []BGPPeer{{Address: "192.168.66.1", ASN: 64500, State: "established", Since: at().Add(-time.Hour)}},
		VIPs:  []BGPVIP{{Address: bgpVIP, Interface: "lo", Mode: "bgp", Announced: true, Why: "eligible"}},
	}
	return s
}

// TestAssessBGP: an operator's status check says DEGRADED while a BGP VIP
// is carried by fewer nodes than the cluster has, or a router has no
// session with this node, and FAIL when no node announces the VIP.
func TestAssessBGP(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(s *Snapshot)
		verdict  Level
		problems []Problem
	}{
		{"every node announces", func(*Snapshot) {}, LevelOK, nil},
		{"a peer's node withdrew", func(s *Snapshot) {
			s.Members[2].Holds = []string{}
			s.Members[2].Maintenance, s.Members[2].Eligible = true, false
		}, LevelDegraded, []Problem{
			deg("member lb3 is in maintenance: it will not take a VIP"),
			deg("BGP VIP 192.168.70.160: announced by 2 of 3 members (lb1, lb2); not by lb3"),
		}},
		{"an eligible node that does not announce", func(s *Snapshot) {
			s.Members[1].Holds = []string{}
		}, LevelDegraded, []Problem{
			deg("BGP VIP 192.168.70.160: announced by 2 of 3 members (lb1, lb3); not by lb2"),
		}},
		{"a dead node's gossip does not count", func(s *Snapshot) {
			s.Members[2].Alive, s.Members[2].LastHeard = false, at().Add(-5*time.Second)
		}, LevelDegraded, []Problem{
			deg("member lb3 (192.168.66.153) is not reachable (last heard 5s ago): no failover to it"),
			deg("BGP VIP 192.168.70.160: announced by 2 of 3 members (lb1, lb2); not by lb3"),
		}},
		{"this node's own state wins over its gossip", func(s *Snapshot) {
			s.BGP.VIPs[0].Announced, s.BGP.VIPs[0].LastError = false, "announce 192.168.70.160/32: boom"
		}, LevelDegraded, []Problem{
			deg("BGP VIP 192.168.70.160: announce 192.168.70.160/32: boom"),
			deg("BGP VIP 192.168.70.160: announced by 2 of 3 members (lb2, lb3); not by lb1"),
		}},
		{"a session down", func(s *Snapshot) {
			s.BGP.Peers = append(s.BGP.Peers, BGPPeer{Address: "192.168.66.2", ASN: 64501, State: "active", Since: at().Add(-30 * time.Second)})
		}, LevelDegraded, []Problem{
			deg("BGP peer 192.168.66.2 (AS 64501): session active for 30s, not established: that router has no route to this node's VIPs"),
		}},
		{"no node announces", func(s *Snapshot) {
			for i := range s.Members {
				s.Members[i].Holds = []string{}
			}
			s.Members[0].Holds = []string{vip}
			s.BGP.VIPs[0].Announced = false
		}, LevelFail, []Problem{
			fail("BGP VIP 192.168.70.160: no member announces it: routers have no route to it"),
		}},
		{"not joined: this node alone", func(s *Snapshot) {
			s.Members = nil
			s.BGP.VIPs[0].Announced = false
		}, LevelFail, []Problem{
			fail("BGP VIP 192.168.70.160: no member announces it: routers have no route to it"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := bgpTrio()
			tt.edit(&s)
			a := Assess(s)
			var got []Problem
			for _, p := range a.Problems {
				if p.Text[:4] == "BGP " || p.Text[:7] == "member " {
					got = append(got, p)
				}
			}
			if diff := cmp.Diff(tt.problems, got); diff != "" {
				t.Fatalf("problems (-want +got):\n%s\nall: %v", diff, a.Problems)
			}
			if a.Verdict != tt.verdict {
				t.Fatalf("verdict %v, want %v: %v", a.Verdict, tt.verdict, a.Problems)
			}
		})
	}
}
