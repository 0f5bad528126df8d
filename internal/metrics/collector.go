package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"halb/internal/admin"
)

// snapshotCollector turns one admin.Snapshot per scrape into const
// metrics, so the daemon keeps a single source of truth for its counters.
type snapshotCollector struct {
	src admin.Source

	feConns, feConnsTotal, feRejected, feBytesIn, feBytesOut, feLimit *prometheus.Desc

	srvUp, srvState, srvConns, srvConnsTotal, srvBytesIn, srvBytesOut *prometheus.Desc
	srvConnectFailures, srvRetries, srvCheckLatency                   *prometheus.Desc
	backendHealthy, backendPanic, srvCheckFailure                     *prometheus.Desc
	srvDowntime, srvDownTransitions, srvPeak, srvWeight               *prometheus.Desc

	verdict, problems *prometheus.Desc

	vipHeld, vipTransitions, vipGARPs, electionAgreed *prometheus.Desc
	vipConnTable, vipLastTickled                      *prometheus.Desc
	vipLastAcknowledged, vipLastReconnect             *prometheus.Desc
	vipHandedOff, vipForwarded, vipClosedAtDrain      *prometheus.Desc

	membersAlive, memberEligible, maintenance, buildInfo *prometheus.Desc
	memberWatched, statePulls                            *prometheus.Desc

	bgpSessionUp, bgpAnnounced *prometheus.Desc
}

func newSnapshotCollector(src admin.Source) *snapshotCollector {
	fe := []string{"frontend"}
	srv := []string{"backend", "server"}
	vip := []string{"vip"}
	d := prometheus.NewDesc
	return &snapshotCollector{
		src: src,

		feConns:      d("halb_frontend_connections", "Client connections open on the frontend now.", fe, nil),
		feConnsTotal: d("halb_frontend_connections_total", "Client connections accepted by the frontend.", fe, nil),
		feRejected:   d("halb_frontend_rejected_total", "Client connections the frontend refused (maxconn reached or no healthy server).", fe, nil),
		feBytesIn:    d("halb_frontend_bytes_in_total", "Bytes received from clients of the frontend.", fe, nil),
		feBytesOut:   d("halb_frontend_bytes_out_total", "Bytes sent to clients of the frontend.", fe, nil),
		feLimit:      d("halb_frontend_connections_limit", "The frontend's maxconn; absent when it has none.", fe, nil),

		srvUp:              d("halb_server_up", "Whether the server is up (1) or not (0) by its health checks and admin state.", srv, nil),
		srvState:           d("halb_server_state", "The server's state: 1 for the current one of up, down, drain, disabled, unknown.", append(srv, "state"), nil),
		srvConns:           d("halb_server_connections", "Connections open to the server now.", srv, nil),
		srvConnsTotal:      d("halb_server_connections_total", "Connections made to the server.", srv, nil),
		srvBytesIn:         d("halb_server_bytes_in_total", "Bytes sent from clients to the server.", srv, nil),
		srvBytesOut:        d("halb_server_bytes_out_total", "Bytes sent from the server to clients.", srv, nil),
		srvConnectFailures: d("halb_server_connect_failures_total", "Connects to the server that were refused or timed out.", srv, nil),
		srvRetries:         d("halb_server_retries_total", "Connections retried on another server after this one failed to connect.", srv, nil),
		srvCheckLatency:    d("halb_server_check_latency_seconds", "How long the server's last health check took.", srv, nil),
		backendHealthy:     d("halb_backend_healthy", "Whether the backend has at least one server that can take connections.", []string{"backend"}, nil),
		backendPanic:       d("halb_backend_panic", "Whether every server of the backend is down by its checks and panic routing forwards to them anyway (1) or not (0).", []string{"backend"}, nil),
		srvDowntime:        d("halb_server_downtime_seconds_total", "Time the server has been down by its health checks since halb started, the current down period included.", srv, nil),
		srvDownTransitions: d("halb_server_down_transitions_total", "Times health checks (or a refused connect) took the server from up to down.", srv, nil),
		srvPeak:            d("halb_server_connections_peak", "Most connections open to the server at once since halb started.", srv, nil),
		srvWeight:          d("halb_server_weight", "The server's configured weight; the backup label says whether it is a backup server.", append(srv, "backup"), nil),
		verdict:            d("halb_status_verdict", "The verdict of halb status on this node: 0 OK, 1 DEGRADED (redundancy lost), 2 FAIL (clients not served reliably).", nil, nil),
		problems:           d("halb_status_problems", "Problems halb status reports on this node, by severity (degraded or fail).", []string{"severity"}, nil),
		srvCheckFailure:    d("halb_server_check_failure", "What the server's last failed health check found: 1 for the current one of gone, not_ready, rejected (credentials refused); all 0 while checks pass.", append(srv, "kind"), nil),

		vipHeld:        d("halb_vip_held", "Whether this node holds the VIP (1) or not (0).", vip, nil),
		vipTransitions: d("halb_vip_transitions_total", "Times the VIP's holder changed as this node saw it.", vip, nil),
		vipGARPs:       d("halb_vip_garp_sent_total", "Gratuitous ARP (or unsolicited NA) packets this node sent for the VIP.", vip, nil),
		electionAgreed: d("halb_election_agreed", "Whether every alive member elects the same holder for the VIP (1) or not (0).", vip, nil),
		vipConnTable:   d("halb_vip_conn_table_connections", "Client connections in the VIP holder's shared table, as known on this node (tickled on takeover).", vip, nil),
		vipLastTickled: d("halb_vip_last_takeover_tickled_connections", "Connections this node tickled when it last took the VIP over.", vip, nil),
		vipLastAcknowledged: d("halb_vip_last_takeover_acknowledged_connections",
			"Tickled connections whose client answered with its real sequence numbers (and was reset) at this node's last takeover of the VIP.", vip, nil),
		vipLastReconnect: d("halb_vip_last_takeover_reconnect_seconds",
			"Time from this node's last takeover of the VIP until the last tickled client address that came back had a connection again.", vip, nil),
		vipHandedOff:     d("halb_vip_handoff_handed_off_connections", "Connections the old holder had when this node's last flow hand-off of the VIP started.", vip, nil),
		vipForwarded:     d("halb_vip_handoff_forwarded_connections", "Connections of the running flow hand-off still open at the old holder (forwarded to it); 0 when none runs.", vip, nil),
		vipClosedAtDrain: d("halb_vip_handoff_closed_at_drain_connections", "Connections the old holder closed at the end of drain in this node's last flow hand-off.", vip, nil),

		membersAlive:   d("halb_cluster_members_alive", "Cluster members this node sees alive, itself included.", nil, nil),
		memberEligible: d("halb_cluster_member_eligible", "Whether the member may hold VIPs (its backends are healthy and it is not in maintenance).", []string{"member"}, nil),
		memberWatched: d("halb_cluster_member_watched",
			"Whether a watch connection with the peer is open (1), so that its crash is noticed at once, or not (0).", []string{"member"}, nil),
		statePulls: d("halb_cluster_state_pulls_total",
			"Times this node pulled a peer's whole state because a gossip update of it was lost.", nil, nil),
		maintenance:  d("halb_node_maintenance", "Whether this node is in maintenance mode.", nil, nil),
		bgpSessionUp: d("halb_bgp_session_up", "Whether this node's BGP session with the peer is established (1) or not (0).", []string{"peer"}, nil),
		bgpAnnounced: d("halb_bgp_announced", "Whether this node announces the VIP to its BGP peers (1) or has withdrawn it (0).", vip, nil),
		buildInfo:    d("halb_build_info", "Always 1; the version label names the running build.", []string{"version"}, nil),
	}
}

func (c *snapshotCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.feConns, c.feConnsTotal, c.feRejected, c.feBytesIn, c.feBytesOut,
		c.srvUp, c.srvState, c.srvConns, c.srvConnsTotal, c.srvBytesIn, c.srvBytesOut,
		c.srvConnectFailures, c.srvRetries, c.srvCheckLatency, c.backendHealthy,
		c.backendPanic, c.srvCheckFailure, c.feLimit,
		c.srvDowntime, c.srvDownTransitions, c.srvPeak, c.srvWeight, c.verdict, c.problems,
		c.vipHeld, c.vipTransitions, c.vipGARPs, c.electionAgreed,
		c.vipConnTable, c.vipLastTickled, c.vipLastAcknowledged, c.vipLastReconnect,
		c.vipHandedOff, c.vipForwarded, c.vipClosedAtDrain,
		c.membersAlive, c.memberEligible, c.maintenance, c.buildInfo,
		c.memberWatched, c.statePulls,
		c.bgpSessionUp, c.bgpAnnounced,
	}
}

// Describe implements prometheus.Collector.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	e := emitter(ch)
	for _, f := range s.Frontends {
		c.frontend(e, f)
	}
	for _, b := range s.Backends {
		c.backend(e, b)
	}
	for _, v := range s.VIPs {
		addr := admin.BareIP(v.Address)
		e.gauge(c.vipHeld, boolValue(v.HeldHere), addr)
		e.counter(c.vipTransitions, float64(v.Transitions), addr)
		e.counter(c.vipGARPs, float64(v.GARPsSent), addr)
		e.gauge(c.electionAgreed, boolValue(agreed(s, v)), addr)
		e.gauge(c.vipConnTable, float64(v.ConnTable), addr)
		e.gauge(c.vipLastTickled, float64(v.LastTickled), addr)
		if o := v.LastTickles; o != nil {
			if o.Counted {
				e.gauge(c.vipLastAcknowledged, float64(o.Acknowledged), addr)
			}
			if o.Reconnected > 0 {
				e.gauge(c.vipLastReconnect, o.ReconnectedWithin, addr)
			}
		}
		e.handoff(c, v.Handoff, addr)
	}
	if s.BGP != nil {
		for _, p := range s.BGP.Peers {
			e.gauge(c.bgpSessionUp, boolValue(p.State == "established"), p.Address)
		}
		for _, v := range s.BGP.VIPs {
			e.gauge(c.bgpAnnounced, boolValue(v.Announced), v.Address)
		}
	}
	c.node(e, s)
}

// emitter sends constant metrics to a Collect channel.
type emitter chan<- prometheus.Metric

func (e emitter) emit(desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	e <- m
}

func (e emitter) gauge(desc *prometheus.Desc, v float64, labels ...string) {
	e.emit(desc, prometheus.GaugeValue, v, labels...)
}

func (e emitter) counter(desc *prometheus.Desc, v float64, labels ...string) {
	e.emit(desc, prometheus.CounterValue, v, labels...)
}

func (c *snapshotCollector) frontend(e emitter, f admin.Frontend) {
	e.gauge(c.feConns, float64(f.Current), f.Name)
	e.counter(c.feConnsTotal, float64(f.Total), f.Name)
	e.counter(c.feRejected, float64(f.Rejected), f.Name)
	e.counter(c.feBytesIn, float64(f.BytesIn), f.Name)
	e.counter(c.feBytesOut, float64(f.BytesOut), f.Name)
	if f.MaxConn > 0 {
		e.gauge(c.feLimit, float64(f.MaxConn), f.Name)
	}
}

// backend emits b's servers and whether b is healthy: it is when a
// server is up, even if the snapshot said otherwise.
func (c *snapshotCollector) backend(e emitter, b admin.Backend) {
	healthy := b.Healthy
	for _, sv := range b.Servers {
		healthy = healthy || sv.State == admin.StateUp
		c.server(e, b.Name, sv)
	}
	e.gauge(c.backendHealthy, boolValue(healthy), b.Name)
	e.gauge(c.backendPanic, boolValue(b.Panic), b.Name)
}

func (c *snapshotCollector) server(e emitter, backend string, sv admin.BackendServer) {
	e.gauge(c.srvUp, boolValue(sv.State == admin.StateUp), backend, sv.Name)
	for _, st := range []string{admin.StateUp, admin.StateDown, admin.StateDrain, admin.StateDisabled, admin.StateUnknown} {
		e.gauge(c.srvState, boolValue(sv.State == st), backend, sv.Name, st)
	}
	e.gauge(c.srvConns, float64(sv.Current), backend, sv.Name)
	e.counter(c.srvConnsTotal, float64(sv.Total), backend, sv.Name)
	e.counter(c.srvBytesIn, float64(sv.BytesIn), backend, sv.Name)
	e.counter(c.srvBytesOut, float64(sv.BytesOut), backend, sv.Name)
	e.counter(c.srvConnectFailures, float64(sv.ConnectFailures), backend, sv.Name)
	e.counter(c.srvRetries, float64(sv.Retries), backend, sv.Name)
	e.counter(c.srvDowntime, sv.Downtime, backend, sv.Name)
	e.counter(c.srvDownTransitions, float64(sv.DownTransitions), backend, sv.Name)
	e.gauge(c.srvPeak, float64(sv.Peak), backend, sv.Name)
	e.gauge(c.srvWeight, float64(sv.Weight), backend, sv.Name, strconv.FormatBool(sv.Backup))
	for _, kind := range []string{admin.CheckGone, admin.CheckNotReady, admin.CheckRejected} {
		e.gauge(c.srvCheckFailure, boolValue(sv.CheckFailure == kind), backend, sv.Name, kind)
	}
	// Before the first check there is no latency; 0 would read as "instant".
	if sv.LastCheck != "" {
		e.gauge(c.srvCheckLatency, sv.CheckLatencyMS/1000, backend, sv.Name)
	}
}

// node emits the members, this node's own state and the verdict.
func (c *snapshotCollector) node(e emitter, s admin.Snapshot) {
	alive := 0
	for _, m := range s.Members {
		if m.Alive {
			alive++
		}
		e.gauge(c.memberEligible, boolValue(m.Eligible), m.Name)
		if !m.Local {
			e.gauge(c.memberWatched, boolValue(m.Watched), m.Name)
		}
	}
	e.gauge(c.membersAlive, float64(alive))
	e.counter(c.statePulls, float64(s.Node.StatePulls))
	e.gauge(c.maintenance, boolValue(s.Node.Maintenance))
	e.gauge(c.buildInfo, 1, s.Node.Version)

	a := admin.Assess(s)
	e.gauge(c.verdict, float64(a.Verdict))
	count := map[admin.Level]int{}
	for _, p := range a.Problems {
		count[p.Level]++
	}
	for _, l := range []admin.Level{admin.LevelDegraded, admin.LevelFail} {
		e.gauge(c.problems, float64(count[l]), l.String())
	}
}

// agreed reports whether every alive member of s gossips a view of v's
// holder equal to this node's election result (v.Holder), as `halb status`
// judges it. A member with no view counts as disagreeing: it cannot vouch
// for the holder.
func agreed(s admin.Snapshot, v admin.VIP) bool {
	for _, m := range s.Members {
		if !m.Alive {
			continue
		}
		if view, ok := admin.MemberView(m, v); !ok || view != v.Holder {
			return false
		}
	}
	return true
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handoff emits a VIP's flow hand-off figures (docs/handoff.md): zeros
// when this node never had one, forwarded only while one runs.
func (e emitter) handoff(c *snapshotCollector, h *admin.Handoff, addr string) {
	var ho admin.Handoff
	if h != nil {
		ho = *h
	}
	forwarded := 0
	if ho.Role != "" {
		forwarded = ho.Forwarded
	}
	e.gauge(c.vipHandedOff, float64(ho.HandedOff), addr)
	e.gauge(c.vipForwarded, float64(forwarded), addr)
	e.gauge(c.vipClosedAtDrain, float64(ho.ClosedAtDrain), addr)
}
