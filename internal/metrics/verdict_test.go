package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"halb/internal/admin"
)

// The status verdict is a metric, so an alert fires on the same judgement
// `halb status` makes: base() has lb2 not eligible, cp02 down and cp03
// not yet checked, all redundancy lost, nothing failing.
func TestStatusVerdictMetric(t *testing.T) {
	want := func(snap admin.Snapshot, text string) {
		t.Helper()
		c := newSnapshotCollector(fakeSource{snap})
		if err := testutil.CollectAndCompare(c, strings.NewReader(text), "halb_status_verdict", "halb_status_problems"); err != nil {
			t.Error(err)
		}
	}
	head := `
# HELP halb_status_verdict The verdict of halb status on this node: 0 OK, 1 DEGRADED (redundancy lost), 2 FAIL (clients not served reliably).
# TYPE halb_status_verdict gauge
# HELP halb_status_problems Problems halb status reports on this node, by severity (degraded or fail).
# TYPE halb_status_problems gauge
`
	base := func() admin.Snapshot {
		s := pair()
		s.Members[0].Holds = []string{"192.168.66.160"}
		s.Frontends[0].Backend = "talos"
		return s
	}
	want(base(), head+`
halb_status_verdict 1
halb_status_problems{severity="degraded"} 3
halb_status_problems{severity="fail"} 0
`)
	fail := base()
	fail.Members[1].Holds = []string{"192.168.66.160"}
	want(fail, head+`
halb_status_verdict 2
halb_status_problems{severity="degraded"} 3
halb_status_problems{severity="fail"} 1
`)
	ok := base()
	ok.Members[1].Eligible = true
	ok.Backends[0].Servers = ok.Backends[0].Servers[:1]
	want(ok, head+`
halb_status_verdict 0
halb_status_problems{severity="degraded"} 0
halb_status_problems{severity="fail"} 0
`)
}

func TestServerHistoryMetrics(t *testing.T) {
	snap := pair()
	snap.Frontends[0].MaxConn = 500
	sv := &snap.Backends[0].Servers[1]
	sv.Downtime, sv.DownTransitions, sv.Peak, sv.Weight, sv.Backup = 735.5, 2, 19, 3, true
	c := newSnapshotCollector(fakeSource{snap})
	want := `
# HELP halb_frontend_connections_limit The frontend's maxconn; absent when it has none.
# TYPE halb_frontend_connections_limit gauge
halb_frontend_connections_limit{frontend="k8s"} 500
# HELP halb_server_downtime_seconds_total Time the server has been down by its health checks since halb started, the current down period included.
# TYPE halb_server_downtime_seconds_total counter
halb_server_downtime_seconds_total{backend="talos",server="cp01"} 0
halb_server_downtime_seconds_total{backend="talos",server="cp02"} 735.5
halb_server_downtime_seconds_total{backend="talos",server="cp03"} 0
# HELP halb_server_down_transitions_total Times health checks (or a refused connect) took the server from up to down.
# TYPE halb_server_down_transitions_total counter
halb_server_down_transitions_total{backend="talos",server="cp01"} 0
halb_server_down_transitions_total{backend="talos",server="cp02"} 2
halb_server_down_transitions_total{backend="talos",server="cp03"} 0
# HELP halb_server_connections_peak Most connections open to the server at once since halb started.
# TYPE halb_server_connections_peak gauge
halb_server_connections_peak{backend="talos",server="cp01"} 0
halb_server_connections_peak{backend="talos",server="cp02"} 19
halb_server_connections_peak{backend="talos",server="cp03"} 0
# HELP halb_server_weight The server's configured weight; the backup label says whether it is a backup server.
# TYPE halb_server_weight gauge
halb_server_weight{backend="talos",backup="false",server="cp01"} 0
halb_server_weight{backend="talos",backup="true",server="cp02"} 3
halb_server_weight{backend="talos",backup="false",server="cp03"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "halb_frontend_connections_limit",
		"halb_server_downtime_seconds_total", "halb_server_down_transitions_total",
		"halb_server_connections_peak", "halb_server_weight"); err != nil {
		t.Fatal(err)
	}
}
