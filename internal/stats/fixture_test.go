package stats

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"halb/internal/admin"
	"halb/internal/config"
)

// fakeSource serves a snapshot a test may swap.
type fakeSource struct {
	mu   sync.Mutex
	snap admin.Snapshot
}

func (f *fakeSource) Snapshot() admin.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) set(s admin.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
}

// fakeClock is a settable time for the failed-login limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// healthyPair is the seed's two LB hosts agreeing that lb1 holds the VIP,
// with control plane cp03 down and cp02 being drained on the Talos API.
func healthyPair(now time.Time) admin.Snapshot {
	const vip = "192.168.66.160"
	view := map[string]string{vip: "lb1"}
	up := func(name, addr string, lat float64, cur, total int64) admin.BackendServer {
		return admin.BackendServer{Name: name, Address: addr, State: admin.StateUp, Since: now.Add(-3 * time.Hour),
			LastCheck: "HTTP 200", LastCheckOK: true, CheckLatencyMS: lat, Current: cur, Total: total,
			BytesIn: total * 2100, BytesOut: total * 51000, Weight: 1, Peak: cur + 9}
	}
	down := func(name, addr, why string) admin.BackendServer {
		return admin.BackendServer{Name: name, Address: addr, State: admin.StateDown, Since: now.Add(-95 * time.Second),
			LastCheck: why, Total: 4120, BytesIn: 9_100_000, BytesOut: 210_000_000, ConnectFailures: 3, Weight: 1,
			Peak: 19, FailedChecks: 41, DownTransitions: 2, Downtime: 95 + 640}
	}
	talos1, talos2 := up("talos-lon-cp01", "192.168.66.161:50000", 2.4, 3, 880), up("talos-lon-cp02", "192.168.66.162:50000", 2.9, 0, 870)
	talos1.LastCheck, talos2.LastCheck = "handshake ok", "handshake ok"
	talos2.State = admin.StateDrain
	return admin.Snapshot{
		Time: now,
		Node: admin.NodeInfo{Name: "lb1", Version: "0.9.0", Uptime: (3*time.Hour + 12*time.Minute).Seconds(),
			StartedAt: now.Add(-3*time.Hour - 12*time.Minute), Fingerprint: "5e0c7a1d",
			Roles: []admin.VIPRole{{VIP: vip, Role: admin.RoleHolder, Why: "eligible with the highest priority"}}},
		Members: []admin.Member{
			{Name: "lb1", Address: "192.168.66.151:7946", Alive: true, Local: true, Priority: 200, Eligible: true,
				Frontends: map[string]bool{"k8s-api": true, "talos-api": true}, Holds: []string{vip}, HolderView: view,
				Fingerprint: "5e0c7a1d", Version: "0.9.0", LastHeard: now},
			{Name: "lb2", Address: "192.168.66.152:7946", Alive: true, Priority: 100, Eligible: true,
				Frontends: map[string]bool{"k8s-api": true, "talos-api": true}, HolderView: view,
				Fingerprint: "5e0c7a1d", Version: "0.9.0", LastHeard: now.Add(-200 * time.Millisecond)},
		},
		VIPs: []admin.VIP{{Address: vip, Interface: "eth0", Holder: "lb1", HeldHere: true, Since: now.Add(-42 * time.Minute),
			LastGARP: now.Add(-4 * time.Second), GARPsSent: 212, Transitions: 3}},
		Frontends: []admin.Frontend{
			{Name: "k8s-api", Bind: vip + ":6443", Backend: "k8s-api", Current: 14, Total: 48213, Rate: 3.2,
				BytesIn: 101_000_000, BytesOut: 2_460_000_000, MaxConn: 2000},
			{Name: "talos-api", Bind: vip + ":50000", Backend: "talos-api", Current: 3, Total: 1750, Rate: 0.1,
				BytesIn: 3_700_000, BytesOut: 89_000_000, Rejected: 2},
		},
		Backends: []admin.Backend{
			{Name: "k8s-api", Balance: "roundrobin", Healthy: true, Servers: []admin.BackendServer{
				up("talos-lon-cp01", "192.168.66.161:6443", 1.8, 8, 24100),
				up("talos-lon-cp02", "192.168.66.162:6443", 2.1, 6, 24050),
				down("talos-lon-cp03", "192.168.66.163:6443", "connect: connection refused"),
			}},
			{Name: "talos-api", Balance: "roundrobin", Healthy: true, Servers: []admin.BackendServer{
				talos1, talos2,
				down("talos-lon-cp03", "192.168.66.163:50000", "connect: connection refused"),
			}},
		},
	}
}

// allUp is healthyPair with every server up and enabled: the OK verdict.
func allUp(now time.Time) admin.Snapshot {
	s := healthyPair(now)
	for _, b := range s.Backends {
		for i := range b.Servers {
			sv := &b.Servers[i]
			sv.State, sv.LastCheck, sv.LastCheckOK = admin.StateUp, "HTTP 200", true
		}
	}
	return s
}

// hashOf is a bcrypt hash of password at the cheapest cost, to keep
// tests fast; production hashes use cost 12.
func hashOf(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// statsConfig has one user, admin with password "s3cret", and the rest
// of the seed's defaults.
func statsConfig(t testing.TB) config.Stats {
	return config.Stats{
		Users:   []config.StatUser{{Name: "admin", PasswordHash: hashOf(t, "s3cret")}},
		Refresh: 5 * time.Second,
	}
}
