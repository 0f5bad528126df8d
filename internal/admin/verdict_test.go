package admin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// handover is healthyPair a moment into a planned move to lb2: both
// members elect lb2, both still hold the VIP, the election changed ago.
func handover(ago time.Duration) Snapshot {
	s := healthyPair()
	s.VIPs[0].Holder, s.VIPs[0].Elected = "lb2", s.Time.Add(-ago)
	for i := range s.Members {
		s.Members[i].Holds = []string{vip}
		s.Members[i].HolderView = map[string]string{vip: "lb2"}
	}
	return s
}

// claimed is a pair that elected holder ago, which nobody holds yet.
func claimed(holder string, ago time.Duration) Snapshot {
	s := healthyPair()
	s.VIPs[0].Holder, s.VIPs[0].HeldHere, s.VIPs[0].Elected = holder, false, s.Time.Add(-ago)
	for i := range s.Members {
		s.Members[i].Holds = nil
		s.Members[i].HolderView = map[string]string{vip: holder}
	}
	return s
}

func deg(text string) Problem  { return Problem{Level: LevelDegraded, Text: text} }
func fail(text string) Problem { return Problem{Level: LevelFail, Text: text} }

func TestAssess(t *testing.T) {
	tests := []struct {
		name     string
		snap     func() Snapshot
		verdict  Level
		problems []Problem
	}{
		{name: "healthy pair", snap: healthyPair, verdict: LevelOK},
		{
			name: "a server down or drained is redundancy lost", snap: downServer, verdict: LevelDegraded,
			problems: []Problem{
				deg("backend kubernetes: server talos-lon-cp02 (192.168.66.162:6443) is down: connect: connection refused"),
				deg("backend kubernetes: server talos-lon-cp03 (192.168.66.163:6443) is drained by an operator"),
			},
		},
		{
			name: "disabled and not yet checked servers", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[0].Servers = servers("6443", StateUp, StateDisabled, StateUnknown)
				return s
			},
			problems: []Problem{
				deg("backend kubernetes: server talos-lon-cp02 (192.168.66.162:6443) is disabled by an operator"),
				deg("backend kubernetes: server talos-lon-cp03 (192.168.66.163:6443) has no check result yet"),
			},
		},
		{
			name: "a check rejected for credentials", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				sv := &s.Backends[0].Servers[0]
				sv.State, sv.LastCheckOK, sv.CheckFailure, sv.LastCheck = StateDown, false, CheckRejected, "HTTP 401 Unauthorized"
				return s
			},
			problems: []Problem{deg("backend kubernetes: server talos-lon-cp01 (192.168.66.161:6443): check rejected: credentials: HTTP 401 Unauthorized")},
		},
		{
			name: "panic routing", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[1].Healthy, s.Backends[1].Panic = false, true
				s.Backends[1].Servers = servers("50000", StateDown)
				return s
			},
			problems: []Problem{
				deg("backend talos: server talos-lon-cp01 (192.168.66.161:50000) is down: connect: connection refused"),
				deg("frontend talos: backend talos is in PANIC: every server is down by its checks, new connections go to them anyway (panic_routing); this node is not eligible for the VIP"),
			},
		},
		{
			name: "a peer in maintenance", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Maintenance, s.Members[1].Eligible = true, false
				return s
			},
			problems: []Problem{deg("member lb2 is in maintenance: it will not take a VIP")},
		},
		{
			name: "this node in maintenance is named once", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Node.Maintenance = true
				s.Members[0].Maintenance, s.Members[0].Eligible = true, false
				return s
			},
			problems: []Problem{deg("member lb1 (this node) is in maintenance: it will not take a VIP")},
		},
		{
			name: "this node in maintenance before gossip says so", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Node.Maintenance = true
				return s
			},
			problems: []Problem{deg("member lb1 (this node) is in maintenance: it will not take a VIP")},
		},
		{
			name: "a peer not eligible", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Eligible = false
				s.Members[1].Frontends["talos"] = false
				return s
			},
			problems: []Problem{deg("member lb2 is not eligible (no healthy server for talos): no failover to it")},
		},
		{
			name: "configs and versions differ", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Fingerprint, s.Members[1].Version = "77aa0000", "v0.2.0"
				return s
			},
			problems: []Problem{
				deg("member lb2 runs another config (fingerprint 77aa0000, this node 3f2a9c1b): members may elect differently"),
				deg("member lb2 runs version v0.2.0, this node v0.1.0"),
			},
		},
		{
			name: "a peer reachable only through another", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].HeardVia = "lb3"
				return s
			},
			problems: []Problem{deg("member lb2 is unreachable from this node but heard by lb3: the path between them is broken")},
		},
		{
			name: "frontend without its listener on the holder", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Frontends[0].ListenError = "listen on 192.168.66.160:6443: bind: address already in use"
				return s
			},
			problems: []Problem{fail("frontend kubernetes: not listening on 192.168.66.160:6443: listen on 192.168.66.160:6443: bind: address already in use; this node is not eligible")},
		},
		{
			name: "frontend without its listener on a standby while the holder serves", verdict: LevelDegraded,
			snap: standbyView(func(s *Snapshot) {
				s.Frontends[0].ListenError = "bind: address already in use"
				s.Members[0].Eligible = false
			}),
			problems: []Problem{
				deg("member lb1 (this node) is not eligible: no failover to it"),
				deg("frontend kubernetes: not listening on 192.168.66.160:6443: bind: address already in use; this node is not eligible; lb2 holds the VIP and serves it"),
			},
		},
		{
			name: "split brain", snap: splitBrain, verdict: LevelFail,
			problems: []Problem{
				fail("VIP 192.168.66.160: held by 2 members at once: lb1, lb2"),
				deg("VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 says lb2"),
			},
		},
		{
			name: "everyone agrees but two hold it", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Holds = []string{vip}
				return s
			},
			problems: []Problem{fail("VIP 192.168.66.160: held by 2 members at once: lb1, lb2 (lb2 has not let go since lb1 was elected)")},
		},
		{
			name: "a handover's make-before-break overlap", verdict: LevelDegraded,
			snap:     func() Snapshot { return handover(300 * time.Millisecond) },
			problems: []Problem{deg("VIP 192.168.66.160: handing over from lb1 to lb2: both hold it until lb1 lets go (make before break)")},
		},
		{
			name: "a handover stuck past the grace", verdict: LevelFail,
			snap:     func() Snapshot { return handover(HandoverGrace) },
			problems: []Problem{fail("VIP 192.168.66.160: held by 2 members at once: lb1, lb2 (lb1 has not let go since lb2 was elected)")},
		},
		{
			name: "a handover before the old holder's new view arrived", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := handover(100 * time.Millisecond)
				s.Members[1].HolderView = map[string]string{vip: "lb1"}
				return s
			},
			problems: []Problem{
				deg("VIP 192.168.66.160: members disagree on the holder: lb1 says lb2, lb2 says lb1"),
				deg("VIP 192.168.66.160: handing over from lb1 to lb2: both hold it until lb1 lets go (make before break)"),
			},
		},
		{
			name: "two holders electing each other past the grace", verdict: LevelFail,
			snap: func() Snapshot {
				s := handover(time.Minute)
				s.Members[1].HolderView = map[string]string{vip: "lb1"}
				return s
			},
			problems: []Problem{
				fail("VIP 192.168.66.160: held by 2 members at once: lb1, lb2"),
				deg("VIP 192.168.66.160: members disagree on the holder: lb1 says lb2, lb2 says lb1"),
			},
		},
		{
			name: "nobody eligible", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Holder, s.VIPs[0].HeldHere = "", false
				for i := range s.Members {
					s.Members[i].Holds = nil
					s.Members[i].HolderView[vip] = ""
				}
				return s
			},
			problems: []Problem{fail("VIP 192.168.66.160: no member holds it: no member is eligible")},
		},
		{
			name: "elected but not held", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[0].Holds = nil
				return s
			},
			problems: []Problem{fail("VIP 192.168.66.160: no member holds it (elected: lb1)")},
		},
		{
			name: "elected elsewhere, its claim not heard yet", verdict: LevelDegraded,
			snap:     func() Snapshot { return claimed("lb2", 300*time.Millisecond) },
			problems: []Problem{deg("VIP 192.168.66.160: lb2 was elected 300ms ago and is claiming it: not heard holding it yet")},
		},
		{
			name: "elected elsewhere, its claim missing past the grace", verdict: LevelFail,
			snap:     func() Snapshot { return claimed("lb2", ClaimGrace) },
			problems: []Problem{fail("VIP 192.168.66.160: no member holds it (elected: lb2)")},
		},
		{
			name: "elected here a moment ago and not held", verdict: LevelFail,
			snap:     func() Snapshot { return claimed("lb1", 100*time.Millisecond) },
			problems: []Problem{fail("VIP 192.168.66.160: no member holds it (elected: lb1)")},
		},
		{
			name: "held by the wrong member", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Holder = "lb2"
				s.Members[1].HolderView[vip] = "lb2"
				return s
			},
			problems: []Problem{deg("VIP 192.168.66.160: lb1 holds it but the members elected lb2")},
		},
		{
			name: "member without a view disagrees", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].HolderView = nil
				s.Members[1].StateErr = "decode state: unexpected EOF"
				return s
			},
			problems: []Problem{
				deg("VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 has no view"),
				deg("member lb2: its gossiped state cannot be read (decode state: unexpected EOF): it counts as not eligible"),
			},
		},
		{
			name: "a dead member does not vote but is flagged as lost redundancy", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := splitBrain()
				s.Members[1].Alive = false
				return s
			},
			problems: []Problem{deg("member lb2 (192.168.66.152) is not reachable (last heard 3s ago): no failover to it")},
		},
		{
			name: "a configured member never seen", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1] = Member{Name: "lb2", Address: "192.168.66.152:7946"}
				return s
			},
			problems: []Problem{deg("member lb2 (192.168.66.152:7946) is not reachable (never heard from): no failover to it")},
		},
		{
			name: "prefix lengths name the same VIP", verdict: LevelOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.VIPs[0].Address = vip + "/24"
				s.Members[0].Holds = []string{vip + "/24"}
				return s
			},
		},
		{
			name: "this node missing from members still counts", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members = s.Members[1:]
				s.Members[0].HolderView[vip] = "lb2"
				s.Members[0].Holds = []string{vip}
				return s
			},
			problems: []Problem{deg("VIP 192.168.66.160: members disagree on the holder: lb2 says lb2, lb1 says lb1")},
		},
		{
			name: "backend without a healthy server", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[1].Healthy = false
				s.Backends[1].Servers = servers("50000", StateDown, StateDown, StateDrain)
				return s
			},
			problems: []Problem{
				fail("frontend talos: backend talos has no healthy server (talos-lon-cp01 down, talos-lon-cp02 down, talos-lon-cp03 drain)"),
				deg("backend talos: server talos-lon-cp01 (192.168.66.161:50000) is down: connect: connection refused"),
				deg("backend talos: server talos-lon-cp02 (192.168.66.162:50000) is down: connect: connection refused"),
				deg("backend talos: server talos-lon-cp03 (192.168.66.163:50000) is drained by an operator"),
			},
		},
		{
			name: "backend without a healthy server here while the holder has one", verdict: LevelDegraded,
			snap: standbyView(func(s *Snapshot) {
				s.Backends[1].Healthy = false
				s.Backends[1].Servers = servers("50000", StateDown)
				s.Members[0].Eligible = false
				s.Members[0].Frontends["talos"] = false
			}),
			problems: []Problem{
				deg("member lb1 (this node) is not eligible (no healthy server for talos): no failover to it"),
				deg("backend talos: server talos-lon-cp01 (192.168.66.161:50000) is down: connect: connection refused"),
				deg("frontend talos: backend talos has no healthy server (talos-lon-cp01 down); lb2 holds the VIP and serves it"),
			},
		},
		{
			name: "backend missing from the status", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends = s.Backends[:1]
				return s
			},
			problems: []Problem{fail("frontend talos: backend talos is not in the status")},
		},
		{
			name: "a server up counts even if Healthy is unset", verdict: LevelOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.Backends[0].Healthy = false
				return s
			},
		},
		{
			name: "no cluster: proxy only", verdict: LevelOK,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members, s.VIPs, s.Node.Roles = nil, nil, nil
				return s
			},
		},
		{
			name: "no cluster: a frontend without a server fails", verdict: LevelFail,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members, s.VIPs, s.Node.Roles = nil, nil, nil
				s.Backends[0].Servers, s.Backends[0].Healthy = nil, false
				return s
			},
			problems: []Problem{fail("frontend kubernetes: backend kubernetes has no healthy server (no servers)")},
		},
		{
			name: "text from the network is made printable", verdict: LevelDegraded,
			snap: func() Snapshot {
				s := healthyPair()
				s.Members[1].Version = "v0.1.0\x1b[2J"
				return s
			},
			problems: []Problem{deg(`member lb2 runs version v0.1.0\x1b[2J, this node v0.1.0`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Assess(tt.snap())
			if a.Verdict != tt.verdict || a.Code != tt.verdict.Code() {
				t.Errorf("verdict = %v (exit %d), want %v (exit %d)", a.Verdict, a.Code, tt.verdict, tt.verdict.Code())
			}
			want := tt.problems
			if want == nil {
				want = []Problem{}
			}
			if diff := cmp.Diff(want, a.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			code, texts := Verdict(tt.snap())
			if code != a.Code || len(texts) != len(a.Problems) {
				t.Errorf("Verdict = %d, %q; Assess = %d, %d problems", code, texts, a.Code, len(a.Problems))
			}
		})
	}
}

// standbyView is the healthy pair as lb1 sees it once lb2 holds the VIP,
// changed by edit.
func standbyView(edit func(*Snapshot)) func() Snapshot {
	return func() Snapshot {
		s := healthyPair()
		s.VIPs[0].Holder, s.VIPs[0].HeldHere = "lb2", false
		s.Node.Roles = []VIPRole{{VIP: vip, Role: RoleStandby, Why: "elected holder is lb2"}}
		s.Members[0].Holds, s.Members[0].HolderView[vip] = []string{}, "lb2"
		s.Members[1].Holds, s.Members[1].HolderView[vip] = []string{vip}, "lb2"
		edit(&s)
		return s
	}
}

func TestExitCodesFollowMonitoringPlugins(t *testing.T) {
	got := []int{LevelOK.Code(), LevelDegraded.Code(), LevelFail.Code(), CodeUnreachable}
	if diff := cmp.Diff([]int{0, 1, 2, 3}, got); diff != "" {
		t.Errorf("OK, WARNING, CRITICAL, UNKNOWN (-want +got):\n%s", diff)
	}
}

func TestStatusJSON(t *testing.T) {
	s := downServer()
	s.Members[0].Holds = nil
	b, err := json.Marshal(NewStatus(s))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Node     NodeInfo `json:"node"`
		Verdict  string   `json:"verdict"`
		ExitCode int      `json:"exit_code"`
		Problems []struct {
			Severity string `json:"severity"`
			Text     string `json:"text"`
		} `json:"problems"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Node.Name != "lb1" || doc.Verdict != "fail" || doc.ExitCode != CodeFail || len(doc.Problems) < 2 ||
		doc.Problems[0].Severity != "fail" || doc.Problems[len(doc.Problems)-1].Severity != "degraded" {
		t.Errorf("status JSON: %s", b)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Assess(s), back.Assessment); diff != "" {
		t.Errorf("assessment does not survive JSON (-want +got):\n%s", diff)
	}
	var l Level
	if err := l.UnmarshalText([]byte("warning")); err == nil {
		t.Error("verdict \"warning\" accepted")
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
