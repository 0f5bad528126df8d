package round

import (
	"time"

	"halb/internal/cluster"
	"halb/internal/config"
)

// Inputs are everything one round decides on. The controller gathers them
// once per round; Decide reads nothing else, so two nodes given the same
// inputs plan the same.
type Inputs struct {
	Now time.Time
	// Self is this node's name.
	Self string
	// Ready: the cluster joined its peers, or the join timeout passed.
	// Before, a round only publishes this node's state.
	Ready  bool
	Config Config
	Local  Local
	// Members as the cluster lists them, alive or not, this node included.
	Members []Member
	// VIPs in config order, with what this node's announcers hold.
	VIPs []VIP
}

// Config is the part of the config in force that a round needs.
type Config struct {
	Policy       config.Policy
	Quorum       bool     // cluster.quorum: a minority holds nothing
	Nodes        []string // cluster.nodes, by name
	PreemptDelay time.Duration
	Eligibility  string // cluster.eligibility: "" (all frontends) or "any_frontend"
	Priority     int    // this node's configured priority
	Witness      bool   // cluster.witness is set
	Fingerprint  string
	Version      string
}

// Local are the facts only this node knows about itself.
type Local struct {
	// Started is when the daemon started; HealthKnown that every server
	// has a first check result. Either settles the node's health.
	Started     time.Time
	HealthKnown bool
	Frontends   []Frontend
	Maintenance bool // set by the operator
	Leaving     bool // shutting down: hand the VIPs over
	// WitnessReachable counts only when Config.Witness is set.
	WitnessReachable bool
	Drill            Drill
	// Incompatible counts configured peers answering with another gossip key.
	Incompatible int
	// Announced are the BGP VIPs this node announces now. They are
	// gossiped with the held VIPs, so that every node's status can count
	// how many nodes carry each BGP VIP.
	Announced []string
}

// Frontend is what eligibility needs to know of one frontend.
type Frontend struct {
	Name      string
	Listening bool // its listener accepts connections
	Healthy   bool // its backend has a server to send them to
}

// Drill holds until when this node plays each drill role; zero for none.
type Drill struct {
	YieldUntil    time.Time // out of the election
	BoostUntil    time.Time // outranks every node
	SilencedUntil time.Time // silent as if crashed
}

// Member is one member as the cluster lists it.
type Member struct {
	Name  string
	Alive bool
	Local bool
	State cluster.State
	// StateErr: its gossiped state did not decode, so it proves nothing.
	StateErr bool
	Since    time.Time // when it joined, as seen here
}

// VIP is one VIP and whether this node's announcer holds it.
type VIP struct {
	Addr      string // e.g. "192.168.66.160"
	Held      bool
	HeldSince time.Time // when Held last changed
	// Claiming: the announcer was told to claim and does not hold the
	// VIP yet. Its claim may be adding the address this very moment, so
	// letting go waits for the new owner as for a held VIP.
	Claiming bool
}
