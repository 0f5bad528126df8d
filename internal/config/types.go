package config

import (
	"net/netip"
	"time"
)

// Balance names a server-selection algorithm.
type Balance string

// Balance algorithms.
const (
	RoundRobin Balance = "roundrobin"
	LeastConn  Balance = "leastconn"
	Source     Balance = "source"
)

// CheckType names a health-check kind.
type CheckType string

// Health-check kinds.
const (
	CheckTCP   CheckType = "tcp"
	CheckTLS   CheckType = "tls"
	CheckHTTP  CheckType = "http"
	CheckHTTPS CheckType = "https"
)

// Policy says what happens when a better node than the VIP holder appears.
type Policy string

// Election policies.
const (
	Preempt Policy = "preempt"
	Sticky  Policy = "sticky"
)

// Config is a validated halb configuration. Zero values never reach users:
// Load fills every default.
type Config struct {
	Log       Log
	Timeouts  Timeouts
	MaxConn   int // global limit on concurrent client connections
	Frontends []Frontend
	Backends  []Backend
	Cluster   *Cluster // nil: a single proxy host without VIP management
	VIPs      []VIP
	Admin     Admin
	Hooks     []Hook
	Stats     *Stats // nil: no stats page
	BGP       *BGP   // nil: no VIP is announced by BGP

	// Fingerprint is a short hash of the file's bytes, gossiped so that
	// operators can see when nodes run different configs.
	Fingerprint string
}

// Log selects log format and verbosity.
type Log struct {
	Format      string // "text" or "json"
	Level       string // "debug", "info", "warn", "error"
	Connections bool   // one line per finished connection
}

// Timeouts apply to every frontend and backend.
type Timeouts struct {
	Connect    time.Duration // dial to a server, per attempt
	ClientIdle time.Duration // no bytes from the client for this long closes the session
	ServerIdle time.Duration // no bytes from the server for this long closes the session
	Drain      time.Duration // how long open connections may finish on stop
	// KeepAlive is the TCP keep-alive idle time and probe interval on
	// both sockets of a session; 0: no keep-alive probes (the default).
	KeepAlive time.Duration
}

// Frontend is one listener.
type Frontend struct {
	Name    string
	Bind    netip.AddrPort
	Backend string
	MaxConn int // 0: only the global limit applies
}

// Backend is a pool of servers with one balance algorithm and health check.
type Backend struct {
	Name        string
	Balance     Balance
	Retries     int  // further servers tried after a failed connect
	CloseOnDown bool // close open sessions of a server when checks find it gone
	// PanicRouting forwards new connections to the backend's enabled servers
	// when checks have marked every one of them down, so a broken check costs
	// an alert instead of an outage.
	PanicRouting bool
	Health       HealthCheck
	Servers      []Server

	// PassiveFall is how many counted connect failures in a row mark a
	// server down without waiting for checks (pool's passive health).
	PassiveFall int
}

// Server is one backend endpoint.
type Server struct {
	Name    string
	Address netip.AddrPort
	Weight  int
	Backup  bool // used only when no non-backup server is up
}

// HealthCheck says how servers of a backend are probed.
type HealthCheck struct {
	Type         CheckType
	Path         string // http/https only
	ExpectStatus []int  // http/https only
	Interval     time.Duration
	Timeout      time.Duration
	Fall         int     // consecutive failures that mark a server down
	Rise         int     // consecutive successes that mark a server up
	Jitter       float64 // fraction of the interval added at random, spreading probes
	TLS          TLSOptions
}

// TLSOptions configure tls and https checks.
type TLSOptions struct {
	ServerName string
	CAFile     string
	CertFile   string
	KeyFile    string
	Verify     bool
	// Talosconfig and Kubeconfig name credential files a Talos user already
	// has; the check takes its client certificate (or bearer token) and CA
	// from Context in them, the file's current context when empty.
	Talosconfig string
	Kubeconfig  string
	Context     string
}

// Cluster configures gossip membership and the election.
type Cluster struct {
	Nodes   []Node
	Port    int
	KeyFile string
	// KeyringFile is where halb keeps the keys `halb keys` installed,
	// primary first; it wins over KeyFile once it exists.
	KeyringFile    string
	InsecureGossip bool
	Profile        string // failure-detection profile: "lan" or "fast"
	Policy         Policy
	PreemptDelay   time.Duration
	Quorum         bool
	Witness        netip.Addr // invalid: no witness
	JoinTimeout    time.Duration
	// Eligibility is "all_frontends" (default) or "any_frontend": which
	// frontends need a healthy server for a node to hold a VIP.
	Eligibility string
}

// Node is one LB host of the cluster.
type Node struct {
	Name      string
	Address   netip.Addr // gossip bind and advertise address
	Priority  int
	Interface string // overrides VIP.Interface on this node
}

// VIP is a virtual address held by one node at a time.
type VIP struct {
	Address      netip.Prefix
	Interface    string
	GARPCount    int
	GARPInterval time.Duration
	GARPRefresh  time.Duration // 0: no periodic refresh
	Lifetime     time.Duration // valid lifetime of the address; the holder refreshes it

	// Announce says how the network learns where the VIP is: ARP (one
	// holder) or BGP (every eligible node, ECMP at the routers).
	Announce Announce
	// Communities, LocalPref and MED are the BGP path attributes; nil
	// pointers are not sent.
	Communities []uint32
	LocalPref   *uint32
	MED         *uint32
	// Prefer names the node whose route wins (primary/backup); "" for
	// ECMP over every eligible node.
	Prefer string
	// Tickle: on takeover, reset the previous holder's client connections
	// with tickle ACKs, at most TickleRate packets per second, the
	// first round spread over at least TickleSpread (0: as fast as the
	// rate allows).
	Tickle       bool
	TickleRate   int
	TickleSpread time.Duration
	// Handoff: on a planned move the new holder forwards the old holder's
	// established connections to it until they close or the drain ends,
	// instead of resetting them (docs/handoff.md).
	Handoff bool
}

// Stats configures the HTTP stats dashboard and Prometheus metrics.
type Stats struct {
	Bind netip.AddrPort
	// Users may log in with HTTP basic auth; PasswordHash is a bcrypt hash.
	Users []StatUser
	// PasswordFile holds more users, one "name:bcrypt-hash" per line.
	PasswordFile string
	// Allow lists the source networks that may connect; empty means any.
	Allow []netip.Prefix
	// Refresh is the dashboard's auto-refresh period.
	Refresh time.Duration
	// MetricsBind serves /metrics on a separate listener without auth
	// (e.g. 127.0.0.1:9601 for a local Prometheus agent); invalid: /metrics
	// is served on Bind under the same rules as the dashboard.
	MetricsBind netip.AddrPort
	// TLS, when set, serves the dashboard over HTTPS (TLS 1.2 or later).
	TLS *StatsTLS
}

// StatsTLS names the stats listener's certificate and key, PEM files
// re-read when they change on disk.
type StatsTLS struct {
	CertFile string
	KeyFile  string
}

// StatUser is one stats-page login.
type StatUser struct {
	Name         string
	PasswordHash string
}

// Admin configures the local admin API.
type Admin struct {
	Socket string
	Group  string
	// StateFile keeps admin states across restarts; see DefaultStateFile.
	StateFile string
}

// Node returns the cluster node called name.
func (c *Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Backend returns the backend called name.
func (c *Config) Backend(name string) (Backend, bool) {
	for _, b := range c.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}
