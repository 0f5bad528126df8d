package round

import (
	"maps"
	"time"

	"halb/internal/cluster"
)

// Action is what a round does with one VIP.
type Action int

const (
	// Keep changes nothing: the announcer goes on doing what it does.
	Keep Action = iota
	// Claim wants the VIP held here.
	Claim
	// Release wants the VIP gone from here.
	Release
)

func (a Action) String() string {
	switch a {
	case Claim:
		return "claim"
	case Release:
		return "release"
	}
	return "keep"
}

// Plan is what a round decided.
type Plan struct {
	// Memory is what the next round starts from.
	Memory Memory
	// Publish is the state to gossip; nil when it has not changed.
	Publish *cluster.State
	// Alive lists the members alive this round; nil before the cluster is
	// ready, when no VIP is decided.
	Alive []string
	// MembersChanged: the alive members differ from the previous round's.
	MembersChanged bool
	// Strangers are members not in cluster.nodes seen for the first time.
	Strangers []string
	VIPs      []VIPPlan
	// WakeAt is when a pending decision needs another round; zero if none.
	WakeAt time.Time
}

// VIPPlan is a round's decision for one VIP.
type VIPPlan struct {
	VIP      string
	Owner    string // elected owner, "" for nobody
	Previous string // the previous round's owner
	Action   Action
	Reason   string
	// Announce says why neighbours may hold a stale ARP entry for a VIP
	// held here, so it is announced again; "" for no announcement.
	Announce string
	// PreemptAt is when this node will take the VIP from its owner if
	// nothing changes; zero if it will not.
	PreemptAt time.Time
	// Regained: another member held the VIP while this node did, from
	// before the other began (a partition, a freeze), and has let go. That holder took this node's
	// clients over and reset them, so the sessions this node still has
	// through the VIP from before may be orphans: the daemon tickles them.
	Regained bool
}

// Memory is what a round remembers for the next one. Its zero value is
// the start.
type Memory struct {
	// Settled: every server had a first check, or the wait for it ended.
	Settled       bool
	EligibleSince time.Time
	Published     *cluster.State       // last state gossiped; never changed once set
	Alive         []string             // alive members in the last ready round
	Listed        []string             // members listed then, alive or not
	Holder        map[string]string    // VIP -> owner elected last round
	HandoverSince map[string]time.Time // VIP -> since when another owner holds what this node holds
	Strangers     map[string]bool      // members not in cluster.nodes, already reported
	Contested     map[string]bool      // VIP -> another member held it last round
	LateAnnounced map[string]bool      // VIP -> announced again once the locktime passed
	// HeldWhenContested: VIP -> this node already held it when another
	// member began to hold it too (a partition healing, not a claim
	// made while the old holder lets go).
	HeldWhenContested map[string]bool
}

// clone copies m so that a round never changes its caller's memory.
func (m Memory) clone() Memory {
	c := m
	c.Holder = cloneOrNew(m.Holder)
	c.HandoverSince = cloneOrNew(m.HandoverSince)
	c.Strangers = cloneOrNew(m.Strangers)
	c.Contested = cloneOrNew(m.Contested)
	c.LateAnnounced = cloneOrNew(m.LateAnnounced)
	c.HeldWhenContested = cloneOrNew(m.HeldWhenContested)
	return c
}

func cloneOrNew[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return maps.Clone(m)
}
