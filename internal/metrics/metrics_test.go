package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"halb/internal/admin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeSource struct{ snap admin.Snapshot }

func (f fakeSource) Snapshot() admin.Snapshot { return f.snap }

// pair is two LB hosts that agree lb1 holds the VIP; the talos backend
// has one server down.
func pair() admin.Snapshot {
	return admin.Snapshot{
		Node: admin.NodeInfo{Name: "lb1", Version: "1.2.3", StatePulls: 3},
		Members: []admin.Member{
			{Name: "lb1", Alive: true, Local: true, Eligible: true, Priority: 200},
			{Name: "lb2", Alive: true, Eligible: false, Priority: 100, Watched: true,
				HolderView: map[string]string{"192.168.66.160": "lb1"}},
		},
		VIPs:      []admin.VIP{{Address: "192.168.66.160/24", Holder: "lb1", HeldHere: true, GARPsSent: 7, Transitions: 2}},
		Frontends: []admin.Frontend{{Name: "k8s", Current: 3, Total: 40, Rejected: 1, BytesIn: 1000, BytesOut: 5000}},
		Backends: []admin.Backend{{
			Name: "talos", Healthy: true,
			Servers: []admin.BackendServer{
				{Name: "cp01", State: admin.StateUp, LastCheck: "handshake ok", LastCheckOK: true, CheckLatencyMS: 1.5,
					Current: 2, Total: 30, BytesIn: 600, BytesOut: 4000, Retries: 1, ConnectFailures: 2},
				{Name: "cp02", State: admin.StateDown, LastCheck: "connect: connection refused"},
				{Name: "cp03", State: admin.StateUnknown},
			},
		}},
	}
}

func TestSnapshotMetrics(t *testing.T) {
	c := newSnapshotCollector(fakeSource{pair()})
	want := `
# HELP halb_frontend_connections Client connections open on the frontend now.
# TYPE halb_frontend_connections gauge
halb_frontend_connections{frontend="k8s"} 3
# HELP halb_frontend_connections_total Client connections accepted by the frontend.
# TYPE halb_frontend_connections_total counter
halb_frontend_connections_total{frontend="k8s"} 40
# HELP halb_frontend_rejected_total Client connections the frontend refused (maxconn reached or no healthy server).
# TYPE halb_frontend_rejected_total counter
halb_frontend_rejected_total{frontend="k8s"} 1
# HELP halb_frontend_bytes_in_total Bytes received from clients of the frontend.
# TYPE halb_frontend_bytes_in_total counter
halb_frontend_bytes_in_total{frontend="k8s"} 1000
# HELP halb_frontend_bytes_out_total Bytes sent to clients of the frontend.
# TYPE halb_frontend_bytes_out_total counter
halb_frontend_bytes_out_total{frontend="k8s"} 5000
# HELP halb_server_up Whether the server is up (1) or not (0) by its health checks and admin state.
# TYPE halb_server_up gauge
halb_server_up{backend="talos",server="cp01"} 1
halb_server_up{backend="talos",server="cp02"} 0
halb_server_up{backend="talos",server="cp03"} 0
# HELP halb_server_check_latency_seconds How long the server's last health check took.
# TYPE halb_server_check_latency_seconds gauge
halb_server_check_latency_seconds{backend="talos",server="cp01"} 0.0015
halb_server_check_latency_seconds{backend="talos",server="cp02"} 0
# HELP halb_server_retries_total Connections retried on another server after this one failed to connect.
# TYPE halb_server_retries_total counter
halb_server_retries_total{backend="talos",server="cp01"} 1
halb_server_retries_total{backend="talos",server="cp02"} 0
halb_server_retries_total{backend="talos",server="cp03"} 0
# HELP halb_server_connect_failures_total Connects to the server that were refused or timed out.
# TYPE halb_server_connect_failures_total counter
halb_server_connect_failures_total{backend="talos",server="cp01"} 2
halb_server_connect_failures_total{backend="talos",server="cp02"} 0
halb_server_connect_failures_total{backend="talos",server="cp03"} 0
# HELP halb_backend_healthy Whether the backend has at least one server that can take connections.
# TYPE halb_backend_healthy gauge
halb_backend_healthy{backend="talos"} 1
# HELP halb_vip_held Whether this node holds the VIP (1) or not (0).
# TYPE halb_vip_held gauge
halb_vip_held{vip="192.168.66.160"} 1
# HELP halb_vip_transitions_total Times the VIP's holder changed as this node saw it.
# TYPE halb_vip_transitions_total counter
halb_vip_transitions_total{vip="192.168.66.160"} 2
# HELP halb_vip_garp_sent_total Gratuitous ARP (or unsolicited NA) packets this node sent for the VIP.
# TYPE halb_vip_garp_sent_total counter
halb_vip_garp_sent_total{vip="192.168.66.160"} 7
# HELP halb_election_agreed Whether every alive member elects the same holder for the VIP (1) or not (0).
# TYPE halb_election_agreed gauge
halb_election_agreed{vip="192.168.66.160"} 1
# HELP halb_cluster_members_alive Cluster members this node sees alive, itself included.
# TYPE halb_cluster_members_alive gauge
halb_cluster_members_alive 2
# HELP halb_cluster_member_eligible Whether the member may hold VIPs (its backends are healthy and it is not in maintenance).
# TYPE halb_cluster_member_eligible gauge
halb_cluster_member_eligible{member="lb1"} 1
halb_cluster_member_eligible{member="lb2"} 0
# HELP halb_cluster_member_watched Whether a watch connection with the peer is open (1), so that its crash is noticed at once, or not (0).
# TYPE halb_cluster_member_watched gauge
halb_cluster_member_watched{member="lb2"} 1
# HELP halb_cluster_state_pulls_total Times this node pulled a peer's whole state because a gossip update of it was lost.
# TYPE halb_cluster_state_pulls_total counter
halb_cluster_state_pulls_total 3
# HELP halb_node_maintenance Whether this node is in maintenance mode.
# TYPE halb_node_maintenance gauge
halb_node_maintenance 0
# HELP halb_build_info Always 1; the version label names the running build.
# TYPE halb_build_info gauge
halb_build_info{version="1.2.3"} 1
`
	names := []string{
		"halb_frontend_connections", "halb_frontend_connections_total", "halb_frontend_rejected_total",
		"halb_frontend_bytes_in_total", "halb_frontend_bytes_out_total",
		"halb_server_up", "halb_server_check_latency_seconds", "halb_server_retries_total",
		"halb_server_connect_failures_total", "halb_backend_healthy",
		"halb_vip_held", "halb_vip_transitions_total", "halb_vip_garp_sent_total", "halb_election_agreed",
		"halb_cluster_members_alive", "halb_cluster_member_eligible", "halb_node_maintenance", "halb_build_info",
		"halb_cluster_member_watched", "halb_cluster_state_pulls_total",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// One state series per server per state, exactly one of them 1.
	if n := testutil.CollectAndCount(c, "halb_server_state"); n != 3*5 {
		t.Fatalf("halb_server_state has %d series, want 15", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

func TestElectionAgreed(t *testing.T) {
	tests := []struct {
		name string
		edit func(*admin.Snapshot)
		want float64
	}{
		{"all agree", func(*admin.Snapshot) {}, 1},
		{"peer elects another holder", func(s *admin.Snapshot) {
			s.Members[1].HolderView = map[string]string{"192.168.66.160": "lb2"}
		}, 0},
		{"peer elects nobody", func(s *admin.Snapshot) {
			s.Members[1].HolderView = map[string]string{"192.168.66.160": ""}
		}, 0},
		{"peer gossips no view", func(s *admin.Snapshot) { s.Members[1].HolderView = nil }, 0},
		{"dead peer's stale view does not count", func(s *admin.Snapshot) {
			s.Members[1].Alive = false
			s.Members[1].HolderView = map[string]string{"192.168.66.160": "lb2"}
		}, 1},
		{"view keyed with a prefix length", func(s *admin.Snapshot) {
			s.Members[1].HolderView = map[string]string{"192.168.66.160/24": "lb1"}
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pair()
			tt.edit(&s)
			want := "# HELP halb_election_agreed Whether every alive member elects the same holder for the VIP (1) or not (0).\n" +
				"# TYPE halb_election_agreed gauge\n" +
				"halb_election_agreed{vip=\"192.168.66.160\"} " + map[float64]string{0: "0", 1: "1"}[tt.want] + "\n"
			if err := testutil.CollectAndCompare(newSnapshotCollector(fakeSource{s}), strings.NewReader(want), "halb_election_agreed"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestObserveCheck(t *testing.T) {
	m := New(fakeSource{pair()})
	m.ObserveCheck("talos", "cp01", 3*time.Millisecond, true)
	m.ObserveCheck("talos", "cp01", 4*time.Millisecond, true)
	m.ObserveCheck("talos", "cp02", 2*time.Second, false)
	if got := testutil.CollectAndCount(m.checks, "halb_health_check_duration_seconds"); got != 2 {
		t.Fatalf("%d histogram series, want 2 (cp01 ok, cp02 fail)", got)
	}
	want := `
# HELP halb_health_check_duration_seconds Duration of health-check probes by outcome (result: ok or fail).
# TYPE halb_health_check_duration_seconds histogram
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.0005"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.001"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.0025"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.005"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.01"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.025"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.05"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.1"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.25"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="0.5"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="1"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="2.5"} 1
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="5"} 1
halb_health_check_duration_seconds_bucket{backend="talos",result="fail",server="cp02",le="+Inf"} 1
halb_health_check_duration_seconds_sum{backend="talos",result="fail",server="cp02"} 2
halb_health_check_duration_seconds_count{backend="talos",result="fail",server="cp02"} 1
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.0005"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.001"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.0025"} 0
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.005"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.01"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.025"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.05"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.1"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.25"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="0.5"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="1"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="2.5"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="5"} 2
halb_health_check_duration_seconds_bucket{backend="talos",result="ok",server="cp01",le="+Inf"} 2
halb_health_check_duration_seconds_sum{backend="talos",result="ok",server="cp01"} 0.007
halb_health_check_duration_seconds_count{backend="talos",result="ok",server="cp01"} 2
`
	if err := testutil.CollectAndCompare(m.checks, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// TestHandler scrapes the whole registry over HTTP, as Prometheus would,
// and lints every family in it, runtime collectors included.
func TestHandler(t *testing.T) {
	m := New(fakeSource{pair()})
	m.ObserveCheck("talos", "cp01", time.Millisecond, true)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`halb_build_info{version="1.2.3"} 1`,
		`halb_server_up{backend="talos",server="cp02"} 0`,
		`halb_health_check_duration_seconds_count{backend="talos",result="ok",server="cp01"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	problems, err := testutil.GatherAndLint(m.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// Two Metrics must not share state: the daemon and tests each own one.
func TestPrivateRegistries(t *testing.T) {
	a, b := New(fakeSource{pair()}), New(fakeSource{pair()})
	a.ObserveCheck("talos", "cp01", time.Millisecond, true)
	if n := testutil.CollectAndCount(b.checks); n != 0 {
		t.Fatalf("second registry sees %d check series from the first", n)
	}
}

func TestCheckFailureAndPanicMetrics(t *testing.T) {
	s := pair()
	b := &s.Backends[0]
	b.Panic = true
	b.Servers[1].CheckFailure = admin.CheckRejected
	b.Servers[2].CheckFailure = admin.CheckNotReady
	want := `
# HELP halb_backend_panic Whether every server of the backend is down by its checks and panic routing forwards to them anyway (1) or not (0).
# TYPE halb_backend_panic gauge
halb_backend_panic{backend="talos"} 1
# HELP halb_server_check_failure What the server's last failed health check found: 1 for the current one of gone, not_ready, rejected (credentials refused); all 0 while checks pass.
# TYPE halb_server_check_failure gauge
halb_server_check_failure{backend="talos",kind="gone",server="cp01"} 0
halb_server_check_failure{backend="talos",kind="gone",server="cp02"} 0
halb_server_check_failure{backend="talos",kind="gone",server="cp03"} 0
halb_server_check_failure{backend="talos",kind="not_ready",server="cp01"} 0
halb_server_check_failure{backend="talos",kind="not_ready",server="cp02"} 0
halb_server_check_failure{backend="talos",kind="not_ready",server="cp03"} 1
halb_server_check_failure{backend="talos",kind="rejected",server="cp01"} 0
halb_server_check_failure{backend="talos",kind="rejected",server="cp02"} 1
halb_server_check_failure{backend="talos",kind="rejected",server="cp03"} 0
`
	c := newSnapshotCollector(fakeSource{s})
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "halb_backend_panic", "halb_server_check_failure"); err != nil {
		t.Fatal(err)
	}
}

// TestBGPMetrics: each peer's session state and each BGP VIP's
// announcement are exported, and nothing BGP without a bgp section.
func TestBGPMetrics(t *testing.T) {
	s := pair()
	s.BGP = &admin.BGP{
		Peers: []admin.BGPPeer{{Address: "192.168.66.1", ASN: 64512, State: "established"}, {Address: "192.168.66.2", ASN: 64512, State: "active"}},
		VIPs:  []admin.BGPVIP{{Address: "192.168.70.160", Mode: "bgp", Announced: true}, {Address: "192.168.70.161", Mode: "bgp"}},
	}
	want := `# HELP halb_bgp_session_up Whether this node's BGP session with the peer is established (1) or not (0).
# TYPE halb_bgp_session_up gauge
halb_bgp_session_up{peer="192.168.66.1"} 1
halb_bgp_session_up{peer="192.168.66.2"} 0
# HELP halb_bgp_announced Whether this node announces the VIP to its BGP peers (1) or has withdrawn it (0).
# TYPE halb_bgp_announced gauge
halb_bgp_announced{vip="192.168.70.160"} 1
halb_bgp_announced{vip="192.168.70.161"} 0
`
	c := newSnapshotCollector(fakeSource{s})
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "halb_bgp_session_up", "halb_bgp_announced"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(newSnapshotCollector(fakeSource{pair()}), "halb_bgp_session_up", "halb_bgp_announced"); n != 0 {
		t.Fatalf("%d BGP series without a bgp section, want 0", n)
	}
}
