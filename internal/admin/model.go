package admin

import "time"

// Snapshot is everything `halb status` shows about one node, as that node
// sees it. Field names are part of the admin API (v1) and stay stable.
type Snapshot struct {
	Node      NodeInfo   `json:"node"`
	Members   []Member   `json:"members"`
	VIPs      []VIP      `json:"vips"`
	Frontends []Frontend `json:"frontends"`
	Backends  []Backend  `json:"backends"`
	// BGP is the state of the VIPs announced by BGP; nil without a bgp
	// section.
	BGP *BGP `json:"bgp,omitempty"`
	// Time is when the snapshot was taken; durations such as "since" are
	// shown relative to it, so a rendering never depends on the reader's clock.
	Time time.Time `json:"time"`
}

// NodeInfo describes the node that answers.
type NodeInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Uptime is in seconds.
	Uptime      float64   `json:"uptime_seconds"`
	StartedAt   time.Time `json:"started_at"`
	Fingerprint string    `json:"fingerprint"`
	Maintenance bool      `json:"maintenance"`
	Roles       []VIPRole `json:"roles"`
	// StatePulls counts the pulls of a peer's whole state that a lost
	// gossip update started (docs/cluster.md).
	StatePulls uint64 `json:"state_pulls"`
}

// VIP roles of this node.
const (
	RoleHolder    = "holder"
	RoleStandby   = "standby"
	RoleReleasing = "releasing"
)

// VIPRole is this node's part in one VIP, and why.
type VIPRole struct {
	VIP  string `json:"vip"`
	Role string `json:"role"` // RoleHolder, RoleStandby or RoleReleasing
	Why  string `json:"why"`
}

// Member is one cluster member as this node sees it, with the state the
// member gossips about itself.
type Member struct {
	Name        string          `json:"name"`
	Address     string          `json:"address"`
	Alive       bool            `json:"alive"`
	Local       bool            `json:"local"` // the node that answers
	Priority    int             `json:"priority"`
	Eligible    bool            `json:"eligible"`
	Maintenance bool            `json:"maintenance"`
	Frontends   map[string]bool `json:"frontends"` // frontend name -> has a healthy server there
	Holds       []string        `json:"holds"`     // VIP addresses the member says it has added
	// HolderView is the member's own election result, VIP address -> owner
	// name ("" for none), as gossiped. Members that disagree here point at
	// a partition or different configs.
	HolderView  map[string]string `json:"holder_view"`
	Fingerprint string            `json:"fingerprint"`
	Version     string            `json:"version"`
	LastHeard   time.Time         `json:"last_heard"`
	StateErr    string            `json:"state_error,omitempty"` // why the member's gossiped state could not be read
	// HeardVia names a member that still hears this one while the answering
	// node does not (a partial partition); it is kept alive meanwhile.
	HeardVia string `json:"heard_via,omitempty"`
	// Disputed: gossip declared the member failed, but its heartbeats say
	// it lives; it is kept until they agree.
	Disputed bool `json:"disputed,omitempty"`
	// Watched: a watch connection with the member is open, so its crash
	// is noticed at once; false for this node itself.
	Watched bool `json:"watched"`
}

// VIP is one virtual address and this node's view of it.
type VIP struct {
	// Address is the bare IP, e.g. "192.168.66.160"; it is the key used in
	// Member.Holds and Member.HolderView.
	Address   string    `json:"address"`
	Interface string    `json:"interface"`
	Holder    string    `json:"holder"` // owner per this node's election; "" for none
	HeldHere  bool      `json:"held_here"`
	Since     time.Time `json:"since"` // when HeldHere last changed
	// Elected is when Holder last changed; zero if not known (an older
	// node's status).
	Elected     time.Time `json:"elected,omitzero"`
	LastGARP    time.Time `json:"last_garp"`
	GARPsSent   uint64    `json:"garps_sent"`
	Transitions uint64    `json:"transitions"`
	LastError   string    `json:"last_error,omitempty"`
	// PreemptAt is when this node will take the VIP from a lower-priority
	// holder (policy preempt, once eligible for preempt_delay), if nothing
	// changes before; absent when no preemption is pending.
	PreemptAt time.Time `json:"preempt_at,omitzero"`
	// Mode is how the network learns where the VIP is: "arp" here; the
	// VIPs announced by BGP are listed in Snapshot.BGP.
	Mode string `json:"mode,omitempty"`
	// ConnTable is how many client connections the holder's table of this
	// VIP lists, as known here (tickle ACKs, docs/tickle.md); LastTickled
	// how many this node tickled when it last took the VIP over, at
	// LastTakeover.
	ConnTable    int       `json:"conn_table"`
	LastTickled  int       `json:"last_tickled"`
	LastTakeover time.Time `json:"last_takeover,omitzero"`
	// LastTickles is what the last takeover's tickles achieved, when
	// this node tickled any.
	LastTickles *TickleOutcome `json:"last_tickles,omitempty"`
	// Handoff is this node's part in the VIP's running or last flow
	// hand-off (docs/handoff.md); absent if it never had one.
	Handoff *Handoff `json:"handoff,omitempty"`
}

// TickleOutcome is what one takeover's tickles achieved.
type TickleOutcome struct {
	// Counted says whether the answers were counted (the capture needs
	// CAP_NET_RAW, as the tickles do).
	Counted bool `json:"counted"`
	// Acknowledged connections answered with their real sequence numbers
	// and were reset; AlreadyClosed ones answered with a reset of their
	// own (the client had closed them already).
	Acknowledged  int `json:"acknowledged"`
	AlreadyClosed int `json:"already_closed"`
	// Clients is how many distinct client addresses were tickled, and
	// Reconnected how many of them had a connection through the VIP again
	// ReconnectedWithin seconds after the move.
	Clients           int     `json:"clients"`
	Reconnected       int     `json:"reconnected"`
	ReconnectedWithin float64 `json:"reconnected_within_seconds"`
}

// Handoff is one node's side of a planned move that kept the old holder's
// connections: "forwarding" on the new holder, "handing off" on the old
// one, "" once it ended.
type Handoff struct {
	Role string `json:"role,omitempty"`
	Peer string `json:"peer,omitempty"`
	// HandedOff: connections the old holder had when it started; Forwarded:
	// how many it still serves; ClosedAtDrain: how many it closed (FIN)
	// when timeouts.drain ended.
	HandedOff     int       `json:"handed_off"`
	Forwarded     int       `json:"forwarded"`
	ClosedAtDrain int       `json:"closed_at_drain"`
	Since         time.Time `json:"since,omitzero"`
	Ended         time.Time `json:"ended,omitzero"`
	EndReason     string    `json:"end_reason,omitempty"`
}

// BGP is this node's BGP speaker: its sessions and the VIPs it announces.
type BGP struct {
	Peers []BGPPeer `json:"peers"`
	VIPs  []BGPVIP  `json:"vips"`
}

// BGPPeer is one BGP session of this node.
type BGPPeer struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // when the session entered State
}

// BGPVIP is one VIP announced by BGP and whether this node announces it.
// Every eligible node announces (ECMP), so there is no holder.
type BGPVIP struct {
	Address   string `json:"address"` // the bare IP
	Interface string `json:"interface"`
	Mode      string `json:"mode"` // "bgp"
	Announced bool   `json:"announced"`
	// Why is the reason of the last decision, e.g. "eligible" or
	// "maintenance".
	Why   string    `json:"why"`
	Since time.Time `json:"since,omitzero"` // when Announced last changed
	// Draining: withdrawn, the address kept for timeouts.drain so open
	// sessions finish.
	Draining  bool   `json:"draining,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Frontend is one listener and its connection counters.
type Frontend struct {
	Name     string `json:"name"`
	Bind     string `json:"bind"`
	Backend  string `json:"backend"`
	Current  int64  `json:"current"`
	Total    int64  `json:"total"`
	Rejected int64  `json:"rejected"`
	// Rate is new connections per second over the last ~10s; 0 if unknown.
	Rate     float64 `json:"rate"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	MaxConn  int     `json:"maxconn"`
	// ListenError says why the frontend accepts no connections (its
	// address could not be bound, its listener failed); absent while it
	// listens.
	ListenError string `json:"listen_error,omitempty"`
}

// Backend is a server pool.
type Backend struct {
	Name    string          `json:"name"`
	Balance string          `json:"balance"`
	Servers []BackendServer `json:"servers"`
	Healthy bool            `json:"healthy"` // at least one server can take connections
	// Panic: every server is down by its checks and panic routing forwards
	// new connections to them anyway.
	Panic bool `json:"panic,omitempty"`
}

// BackendServer states.
const (
	StateUp       = "up"
	StateDown     = "down"
	StateDrain    = "drain"
	StateDisabled = "disabled"
	StateUnknown  = "unknown"
)

// BackendServer.CheckFailure values.
const (
	CheckGone     = "gone"      // nothing answered: open sessions are closed
	CheckNotReady = "not_ready" // answered, not ready: open sessions drain
	CheckRejected = "rejected"  // answered, refused the check's credentials
)

// BackendServer is one backend endpoint with its health and counters.
type BackendServer struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	State       string    `json:"state"` // StateUp, StateDown, StateDrain, StateDisabled or StateUnknown
	Since       time.Time `json:"since"`
	LastCheck   string    `json:"last_check"` // outcome of the last health check, e.g. "HTTP 200" or "connect: connection refused"
	LastCheckOK bool      `json:"last_check_ok"`
	// CheckFailure says what the last failed check found: CheckGone,
	// CheckNotReady or CheckRejected; empty when it passed.
	CheckFailure    string  `json:"check_failure,omitempty"`
	CheckLatencyMS  float64 `json:"check_latency_ms"`
	Current         int64   `json:"current"`
	Total           int64   `json:"total"`
	BytesIn         int64   `json:"bytes_in"`
	BytesOut        int64   `json:"bytes_out"`
	Retries         int64   `json:"retries"`
	ConnectFailures int64   `json:"connect_failures"`
	Backup          bool    `json:"backup"`
	Weight          int     `json:"weight"`
	// Peak is the most connections open to the server at once since halb
	// started.
	Peak int64 `json:"peak"`
	// FailedChecks counts health checks that failed since start.
	FailedChecks int64 `json:"failed_checks"`
	// DownTransitions counts the times health took the server from up to
	// down (a down server at start is not one).
	DownTransitions int64 `json:"down_transitions"`
	// Downtime is how long, in seconds, health has had the server down
	// since start, the current down period included.
	Downtime float64 `json:"downtime_seconds"`
}

// Admin actions on a server, for Controller.SetServerAdmin.
const (
	ActionEnable  = "enable"
	ActionDisable = "disable"
	ActionDrain   = "drain"
)
