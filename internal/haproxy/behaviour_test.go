package haproxy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func intp(n int) *int { return &n }

func TestPlanPriorities(t *testing.T) {
	lb := func(name, addr string, prio *int) Node {
		return Node{Name: name, Address: netip.MustParseAddr(addr), Priority: prio}
	}
	three := []Node{lb("lb1", "10.0.0.1", nil), lb("lb2", "10.0.0.2", nil), lb("lb3", "10.0.0.3", nil)}
	src := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name  string
		nodes []Node
		k     *Keepalived
		want  []*int
		note  string // in the note; "" means no note at all
	}{
		{"no keepalived", three, nil, []*int{nil, nil, nil}, ""},
		{"keepalived without state or priority", three, &Keepalived{SrcIP: src}, []*int{nil, nil, nil}, ""},
		// The case issue 15 found: a MASTER at 50 became the least
		// preferred node when the others got halb's default, 100.
		{"master at 50 stays preferred", three, &Keepalived{State: "MASTER", Priority: intp(50), SrcIP: src},
			[]*int{intp(50), intp(40), intp(30)}, "lb1 priority 50 and stays the preferred node; assumed for the others, in --node order: lb2 40 (a BACKUP), lb3 30 (a BACKUP)"},
		{"backup: the next node is the master", three, &Keepalived{State: "BACKUP", Priority: intp(150), SrcIP: src},
			[]*int{intp(150), intp(160), intp(140)}, "lb2 160 (taken as the MASTER), lb3 140 (a BACKUP)"},
		{"no state is keepalived's BACKUP", three[:2], &Keepalived{Priority: intp(100), SrcIP: src},
			[]*int{intp(100), intp(110)}, "no state (keepalived starts it as BACKUP)"},
		{"the keepalived host need not come first", []Node{lb("lb2", "10.0.0.2", nil), lb("lb1", "10.0.0.1", nil)},
			&Keepalived{State: "MASTER", Priority: intp(200), SrcIP: src}, []*int{intp(190), intp(200)}, "lb1 is the keepalived.conf's host (its unicast_src_ip 10.0.0.1)"},
		{"router_id names the host without unicast_src_ip", three[:2], &Keepalived{State: "MASTER", Priority: intp(120), RouterID: "lb2"},
			[]*int{intp(110), intp(120)}, "lb2 is the keepalived.conf's host (its router_id lb2)"},
		{"command-line priorities win", []Node{lb("lb1", "10.0.0.1", intp(7)), lb("lb2", "10.0.0.2", intp(9))},
			&Keepalived{State: "MASTER", Priority: intp(50), SrcIP: src}, []*int{intp(7), intp(9)}, "so lb1 priority 7"},
		{"clamped to halb's range", three[:2], &Keepalived{State: "MASTER", Priority: intp(5), SrcIP: src},
			[]*int{intp(5), intp(0)}, "lb2 0"},
		{"keepalived host not among the nodes", three[1:], &Keepalived{State: "MASTER", Priority: intp(50), SrcIP: src},
			[]*int{nil, nil}, "none of the --node hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, note := planPriorities(tt.nodes, tt.k)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("priorities (-want +got):\n%s", diff)
			}
			if (tt.note == "") != (note == "") || !strings.Contains(note, tt.note) {
				t.Errorf("note = %q, want one containing %q", note, tt.note)
			}
		})
	}
}

// importGolden imports the seed with opts and checks the YAML and the
// grouped warnings against golden files, and that halb accepts the YAML.
func importGolden(t *testing.T, name string, opts Options) *config.Config {
	t.Helper()
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	opts.Source = "seed-haproxy.cfg"
	res, err := Import(data, opts)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("the imported YAML does not validate: %v\n%s", err, res.YAML)
	}
	golden(t, name+".yaml", string(res.YAML))
	golden(t, name+".warnings", FormatWarnings(res.Warnings, opts.Source))
	for _, w := range res.Warnings {
		if w.Effect == Changes && (w.Now == "" || w.Was == "" && w.Directive == "") {
			t.Errorf("a warning that changes behaviour lacks the old or new value: %s", w.Format(opts.Source))
		}
	}
	return c
}

// The seed as imported next to a keepalived.conf from its MASTER at
// priority 50: the MASTER must stay preferred, the assumption must be
// printed, and the output must name the keyring file and the interface's
// origin.
func TestImportGoldenSeedWithKeepalivedMaster(t *testing.T) {
	ka := strings.NewReplacer("state BACKUP", "state MASTER", "priority 150", "priority 50", "    nopreempt\n", "").Replace(seedKeepalived)
	k, err := ParseKeepalived([]byte(ka))
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{Name: "lb1", Address: netip.MustParseAddr("192.168.66.151")},
		{Name: "lb2", Address: netip.MustParseAddr("192.168.66.152")},
	}
	c := importGolden(t, "seed-keepalived-master50", Options{Nodes: nodes, Keepalived: k, KeepalivedSource: "keepalived.conf"})
	if lb1, lb2 := c.Cluster.Nodes[0].Priority, c.Cluster.Nodes[1].Priority; lb1 <= lb2 {
		t.Errorf("lb1 (keepalived MASTER) priority %d, lb2 %d: the MASTER must stay preferred", lb1, lb2)
	}
	if c.VIPs[0].Interface != "ens19" {
		t.Errorf("vip interface %q, want keepalived's ens19", c.VIPs[0].Interface)
	}
	if c.Cluster.KeyringFile == "" {
		t.Error("no keyring_file: the first `halb keys` rotation would need a restart")
	}
}

// Without keepalived nor --vip-interface, the interface is a guess that
// the output and the warnings flag.
func TestImportGoldenSeedInterfaceAssumed(t *testing.T) {
	c := importGolden(t, "seed-nodes", Options{Nodes: seedNodes(t)})
	if c.VIPs[0].Interface != "eth0" || c.Stats == nil {
		t.Errorf("vips %+v, stats %+v", c.VIPs, c.Stats)
	}
}

// A stats page without a login and with a second bind: halb's page always
// asks for one, and listens once.
func TestImportStatsPageShapes(t *testing.T) {
	cfg := tcpPair("server s1 10.1.1.1:6443 check") +
		"listen stats\n  mode http\n  bind 10.1.1.10:9600,10.1.1.11:9600\n  stats enable\n  stats uri /haproxy\n  stats refresh 0s\n"
	c, ws, y := importText(t, cfg, Options{})
	if c.Stats == nil || c.Stats.Bind != netip.MustParseAddrPort("10.1.1.10:9600") || c.Stats.PasswordFile != statsUsersFile {
		t.Fatalf("stats = %+v\n%s", c.Stats, y)
	}
	if c.Stats.Refresh != config.DefaultStatsRefresh {
		t.Errorf("refresh = %s, want the default for HAProxy's 0s", c.Stats.Refresh)
	}
	for _, want := range []string{"was: a page without a login", "was: the stats page on 10.1.1.11:9600", "was: the page at /haproxy; now: the dashboard at /", "was: refresh 0s"} {
		if !slicesContainsFunc(ws, want) {
			t.Errorf("no warning with %q: %v", want, ws)
		}
	}
}

// A stats page halb cannot serve beside the frontends costs the stats
// section, with a warning, not the whole import.
func TestImportStatsPageClash(t *testing.T) {
	cfg := strings.Replace(tcpPair("server s1 10.1.1.1:6443 check"), "10.1.1.10:6443", "10.1.1.10:9600", 1) +
		"listen stats\n  mode http\n  bind 10.1.1.10:9600\n  stats enable\n"
	c, ws, y := importText(t, cfg, Options{})
	if c.Stats != nil {
		t.Fatalf("stats imported on the frontend's address:\n%s", y)
	}
	if !slicesContainsFunc(ws, "was: HAProxy's stats page on 10.1.1.10:9600; now: not imported") {
		t.Errorf("no warning that the stats page was left out: %v", ws)
	}
	if strings.Contains(y, "halb passwd") {
		t.Errorf("output still asks for stats logins:\n%s", y)
	}
}

func slicesContainsFunc(ws []Warning, want string) bool {
	for _, w := range ws {
		if strings.Contains(w.Format("f"), want) {
			return true
		}
	}
	return false
}

// Every effect prints under its own heading, behaviour changes first.
func TestFormatWarningsGroups(t *testing.T) {
	ws := []Warning{
		{Line: 1, Directive: "log global", Message: "m1", Effect: Dropped},
		{Line: 2, Directive: "balance uri", Message: "m2", Now: "balance roundrobin"},
		{Line: 3, Directive: "timeout client 50s", Message: "m3", Effect: Confirm},
	}
	want := `changes behaviour: 1 warning(s), read each one: halb will not do what HAProxy or keepalived did
f:2: changes behaviour: balance uri: m2 [was: balance uri; now: balance roundrobin]

confirm: 1 warning(s), assumptions to check before cutting over
f:3: confirm: timeout client 50s: m3

dropped, no effect: 1 warning(s), nothing to do
f:1: dropped, no effect: log global: m1
`
	if diff := cmp.Diff(want, FormatWarnings(ws, "f")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// The keepalived.conf's host is the node with its unicast_src_ip; its
// router_id, often only a host name, counts only when there is no
// unicast_src_ip, so a file naming a foreign address matches nobody.
func TestKeepalivedHost(t *testing.T) {
	nodes := []Node{
		{Name: "lb1", Address: netip.MustParseAddr("10.0.0.1")},
		{Name: "lb2", Address: netip.MustParseAddr("10.0.0.2")},
	}
	tests := []struct {
		name     string
		k        Keepalived
		wantSelf int
		wantHow  string
	}{
		{"by unicast_src_ip", Keepalived{SrcIP: netip.MustParseAddr("10.0.0.2"), RouterID: "lb1"}, 1, "its unicast_src_ip 10.0.0.2"},
		{"by router_id", Keepalived{RouterID: "lb2"}, 1, "its router_id lb2"},
		{"router_id ignored beside a foreign unicast_src_ip", Keepalived{SrcIP: netip.MustParseAddr("10.0.0.9"), RouterID: "lb1"}, -1, ""},
		{"neither", Keepalived{RouterID: "lb9"}, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self, how := keepalivedHost(nodes, &tt.k)
			if self != tt.wantSelf || how != tt.wantHow {
				t.Fatalf("keepalivedHost = %d, %q; want %d, %q", self, how, tt.wantSelf, tt.wantHow)
			}
		})
	}
}

// A check's timeout never outlasts its interval: HAProxy's timeout check
// is cut to inter, and without one a short inter replaces halb's default.
func TestCheckTimeout(t *testing.T) {
	withCheck := func(d time.Duration) *proxy {
		return &proxy{timeouts: map[string]timeoutVal{"check": {d: d}}}
	}
	tests := []struct {
		name  string
		p     *proxy
		inter time.Duration
		want  string
	}{
		{"timeout check kept", withCheck(500 * time.Millisecond), 2 * time.Second, "500ms"},
		{"timeout check cut to inter", withCheck(5 * time.Second), 2 * time.Second, "2s"},
		{"timeout check 0 ignored", withCheck(0), 2 * time.Second, ""},
		{"no timeout check: halb's default", &proxy{}, 2 * time.Second, ""},
		{"no timeout check, short inter: inter", &proxy{}, 300 * time.Millisecond, "300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkTimeout(tt.p, tt.inter); got != tt.want {
				t.Fatalf("checkTimeout = %q; want %q", got, tt.want)
			}
		})
	}
}
