package admin

import "time"

// at is the fixed clock of every fixture, so renderings are stable.
func at() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }

const vip = "192.168.66.160"

func member(name, addr string, prio int, holds bool, view string) Member {
	m := Member{
		Name: name, Address: addr, Alive: true, Priority: prio, Eligible: true,
		Frontends:   map[string]bool{"kubernetes": true, "talos": true},
		Holds:       []string{},
		HolderView:  map[string]string{vip: view},
		Fingerprint: "3f2a9c1b", Version: "v0.1.0",
		LastHeard: at().Add(-200 * time.Millisecond),
	}
	if holds {
		m.Holds = []string{vip}
	}
	return m
}

func servers(port string, states ...string) []BackendServer {
	var out []BackendServer
	for i, st := range states {
		s := BackendServer{
			Name:    "talos-lon-cp0" + string(rune('1'+i)),
			Address: "192.168.66.16" + string(rune('1'+i)) + ":" + port,
			State:   st, Since: at().Add(-time.Duration(i+1) * time.Hour),
			LastCheck: "HTTP 200", LastCheckOK: true, CheckLatencyMS: 2.4 + float64(i),
			Current: int64(i + 1), Total: int64(100 * (i + 1)),
			BytesIn: 5 << 20, BytesOut: 70 << 20, Weight: 1,
		}
		if port == "50000" {
			s.LastCheck = "TLS handshake ok"
		}
		if st == StateDown {
			s.LastCheck, s.LastCheckOK, s.CheckLatencyMS, s.Current = "connect: connection refused", false, 0, 0
			s.ConnectFailures = 3
		}
		out = append(out, s)
	}
	return out
}

// healthyPair is lb1 (this node) holding the VIP, lb2 on standby, all
// control planes up.
func healthyPair() Snapshot {
	lb1 := member("lb1", "192.168.66.151", 150, true, "lb1")
	lb1.Local = true
	return Snapshot{
		Node: NodeInfo{
			Name: "lb1", Version: "v0.1.0", Uptime: 7384, StartedAt: at().Add(-7384 * time.Second),
			Fingerprint: "3f2a9c1b",
			Roles:       []VIPRole{{VIP: vip, Role: RoleHolder, Why: "highest priority eligible node"}},
		},
		Members: []Member{lb1, member("lb2", "192.168.66.152", 100, false, "lb1")},
		VIPs: []VIP{{
			Address: vip, Interface: "eth0", Holder: "lb1", HeldHere: true,
			Since: at().Add(-2 * time.Hour), LastGARP: at().Add(-5 * time.Second), GARPsSent: 14, Transitions: 1,
		}},
		Frontends: []Frontend{
			{Name: "kubernetes", Bind: vip + ":6443", Backend: "kubernetes", Current: 6, Total: 600, Rate: 0.4,
				BytesIn: 15 << 20, BytesOut: 210 << 20, MaxConn: 1000},
			{Name: "talos", Bind: vip + ":50000", Backend: "talos", Current: 0, Total: 12, Rejected: 2,
				BytesIn: 900, BytesOut: 4096},
		},
		Backends: []Backend{
			{Name: "kubernetes", Balance: "roundrobin", Healthy: true, Servers: servers("6443", StateUp, StateUp, StateUp)},
			{Name: "talos", Balance: "leastconn", Healthy: true, Servers: servers("50000", StateUp, StateUp, StateUp)},
		},
		Time: at(),
	}
}

// splitBrain is two members that each hold the VIP and each think they
// should: a partition between them.
func splitBrain() Snapshot {
	s := healthyPair()
	s.Members[1] = member("lb2", "192.168.66.152", 100, true, "lb2")
	s.Members[1].LastHeard = at().Add(-3 * time.Second)
	return s
}

// downServer is a healthy pair whose kubernetes backend lost one server.
func downServer() Snapshot {
	s := healthyPair()
	s.Backends[0].Servers = servers("6443", StateUp, StateDown, StateDrain)
	return s
}

func secondsDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
