package admin

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVerdict(t *testing.T) {
	tests := []struct {
		name     string
		snap     func() Snapshot
		code     int
		problems []string
	}{
		{name: "healthy pair", snap: healthyPair, code: CodeOK},
		{name: "one server down is fine", snap: downServer, code: CodeOK},
		{
			name: "frontend without its listener", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Frontends[0].ListenError = "listen on 192.168.66.160:6443: bind: address already in use"
				return s
			},
			problems: []string{"frontend kubernetes: not listening on 192.168.66.160:6443: listen on 192.168.66.160:6443: bind: address already in use; this node is not eligible"},
		},
		{
			name: "split brain", snap: splitBrain, code: CodeDegraded,
			problems: []string{
				"VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 says lb2",
				"VIP 192.168.66.160: held by 2 members at once: lb1, lb2",
			},
		},
		{
			name: "everyone agrees but two hold it", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Holds = []string{vip}
				return s
			},
			problems: []string{"VIP 192.168.66.160: held by 2 members at once: lb1, lb2"},
		},
		{
			name: "nobody eligible", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Holder, s.VIPs[0].HeldHere = "", false
				for i := range s.Members {
					s.Members[i].Holds = nil
					s.Members[i].HolderView[vip] = ""
				}
				return s
			},
			problems: []string{"VIP 192.168.66.160: no member holds it: no member is eligible"},
		},
		{
			name: "elected but not held", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[0].Holds = nil
				return s
			},
			problems: []string{"VIP 192.168.66.160: no member holds it (elected: lb1)"},
		},
		{
			name: "held by the wrong member", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Holder = "lb2"
				s.Members[1].HolderView[vip] = "lb2"
				return s
			},
			problems: []string{"VIP 192.168.66.160: lb1 holds it but the members elected lb2"},
		},
		{
			name: "member without a view disagrees", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].HolderView = nil
				s.Members[1].StateErr = "decode state: unexpected EOF"
				return s
			},
			problems: []string{"VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 has no view"},
		},
		{
			name: "a dead member does not vote but is flagged as lost redundancy", code: CodeDegraded,
			snap: func() Snapshot {
				s := splitBrain()
				s.Members[1].Alive = false
				return s
			},
			problems: []string{"member lb2 (192.168.66.152) is not reachable (last heard 3s ago): no failover to it"},
		},
		{
			name: "a configured member never seen", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1] = Member{Name: "lb2", Address: "192.168.66.152:7946"}
				return s
			},
			problems: []string{"member lb2 (192.168.66.152:7946) is not reachable (never heard from): no failover to it"},
		},
		{
			name: "prefix lengths name the same VIP", code: CodeOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Address = vip + "/24"
				s.Members[0].Holds = []string{vip + "/24"}
				return s
			},
		},
		{
			name: "this node missing from members still counts", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members = s.Members[1:]
				s.Members[0].HolderView[vip] = "lb2"
				s.Members[0].Holds = []string{vip}
				return s
			},
			problems: []string{"VIP 192.168.66.160: members disagree on the holder: lb2 says lb2, lb1 says lb1"},
		},
		{
			name: "backend without a healthy server", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[1].Healthy = false
				s.Backends[1].Servers = servers("50000", StateDown, StateDown, StateDrain)
				return s
			},
			problems: []string{"frontend talos: backend talos has no healthy server (talos-lon-cp01 down, talos-lon-cp02 down, talos-lon-cp03 drain)"},
		},
		{
			name: "backend missing from the status", code: CodeDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends = s.Backends[:1]
				return s
			},
			problems: []string{"frontend talos: backend talos is not in the status"},
		},
		{
			name: "a server up counts even if Healthy is unset", code: CodeOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[0].Healthy = false
				return s
			},
		},
		{
			name: "no cluster: proxy only", code: CodeOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members, s.VIPs, s.Node.Roles = nil, nil, nil
				return s
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, problems := Verdict(tt.snap())
			if code != tt.code {
				t.Errorf("code = %d, want %d", code, tt.code)
			}
			if diff := cmp.Diff(tt.problems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderShowsWhyIneligibleAndDead(t *testing.T) {
	s := healthyPair()
	s.Members[1].Eligible = false
	s.Members[1].Frontends["talos"] = false
	lb3 := member("lb3", "192.168.66.153", 50, false, "lb1")
	lb3.Alive = false
	lb3.LastHeard = s.Time.Add(-secondsDur(42))
	s.Members = append(s.Members, lb3)
	var b bytes.Buffer
	Render(&b, s, false)
	if l := line(t, b.String(), "lb2 "); !strings.Contains(l, "no (talos)") {
		t.Errorf("ineligible member does not say why: %q", l)
	}
	if l := line(t, b.String(), "lb3 "); !strings.Contains(l, "no, heard 42s ago") {
		t.Errorf("dead member does not say when it was last heard: %q", l)
	}
}
