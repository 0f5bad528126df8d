package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Invariants a run checks after each step settles.
const (
	InvSettle    = "settle"          // the cluster agreed on one holder in time
	InvOneHolder = "one-holder"      // exactly one node has the VIP on its interface
	InvViews     = "views-agree"     // every node and every member's gossiped view names that holder
	InvEligible  = "holder-eligible" // the holder is eligible if any node is
	InvLeftover  = "leftover-address"
	InvReach     = "reach"      // the client reaches every VIP port within the bound
	InvNeighbour = "neighbour"  // the client's neighbour entry names the holder's MAC
	InvDeadCP    = "dead-cp"    // no client connection waits on a dead control plane past the bound
	InvLeak      = "leak"       // goroutines and RSS return to their baseline
	InvFault     = "fault-tool" // the fault could not be injected or undone (a lab problem, reported all the same)
)

// Violation is one broken invariant.
type Violation struct {
	Invariant string `json:"invariant"`
	Detail    string `json:"detail"`
}

func (v Violation) String() string { return v.Invariant + ": " + v.Detail }

// Node is what was observed of one LB node after a step settled.
type Node struct {
	Name      string `json:"name"`
	HasVIP    bool   `json:"has_vip"`              // the VIP is on its interface (the kernel's word)
	StatusErr string `json:"status_err,omitempty"` // its admin API did not answer
	View      string `json:"view"`                 // the holder per its own election
	Eligible  bool   `json:"eligible"`             // as it says of itself
	Claims    bool   `json:"claims"`               // it says it has added the VIP
	// PreemptAt is when it will take the VIP from the holder (policy
	// preempt, preempt_delay running); zero when no preemption is pending.
	PreemptAt time.Time `json:"preempt_at,omitzero"`
	// Peers is what this node hears each alive member gossip as the holder.
	Peers      map[string]string `json:"peers,omitempty"`
	MAC        string            `json:"mac"`
	PID        int               `json:"pid"`
	Goroutines int               `json:"goroutines"` // 0: unknown
	RSS        int64             `json:"rss_bytes"`  // 0: unknown
}

// Reach is how the client fared on one VIP port after the faults ended.
type Reach struct {
	Port  int           `json:"port"`
	OK    bool          `json:"ok"`    // it got through within the bound
	After time.Duration `json:"after"` // from the end of the faults to the first success
	Err   string        `json:"err,omitempty"`
}

// Wait is a client connection that waited for a control plane.
type Wait struct {
	CP   string        `json:"cp"` // "" when no answer came at all
	Took time.Duration `json:"took_ns"`
	What string        `json:"what"`
}

// Traffic sums up the requests sent on long-lived connections in a step.
type Traffic struct {
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Longest  time.Duration `json:"longest_ns"`
}

// Observation is everything checked after one step.
type Observation struct {
	Settled   bool          `json:"settled"`
	SettleErr string        `json:"settle_err,omitempty"`
	Nodes     []Node        `json:"nodes"`
	ClientMAC string        `json:"client_mac"` // the client's neighbour entry for the VIP
	Reach     []Reach       `json:"reach"`
	Waits     []Wait        `json:"waits,omitempty"` // waits on control planes that were down at the time
	LongLived Traffic       `json:"long_lived"`      // requests on the long-lived connections during the step
	Settle    time.Duration `json:"settle_ns"`
}

// Baseline is a halb process's goroutines and RSS once it first settled.
type Baseline struct {
	PID        int   `json:"pid"`
	Goroutines int   `json:"goroutines"`
	RSS        int64 `json:"rss_bytes"`
}

// Bounds are the limits the invariants are checked against.
type Bounds struct {
	Reach       time.Duration // the detection bound: from the end of the faults to the client getting through
	HealthCheck time.Duration // longest a client connection may wait on a dead control plane
	// A process leaks when it has more than Goroutines over its baseline,
	// or its RSS grew by more than RSSFactor times the baseline plus RSSSlack.
	Goroutines int
	RSSFactor  float64
	RSSSlack   int64
}

// Check judges one observation. base holds each node's baseline by name;
// a node whose PID differs from its baseline's is not judged for leaks.
func Check(o Observation, b Bounds, base map[string]Baseline) []Violation {
	var c checker
	if !o.Settled {
		c.add(InvSettle, "no agreed holder after %s: %s", o.Settle.Round(time.Millisecond), o.SettleErr)
	}
	eligible := c.holders(o.Nodes)
	// The agreed holder is the one the nodes' own elections name.
	holder := agreed(o.Nodes)
	for _, n := range o.Nodes {
		c.views(n, holder)
	}
	if holder != "" && len(eligible) > 0 && !slices.Contains(eligible, holder) {
		c.add(InvEligible, "%s holds the VIP but is not eligible; %s are", holder, strings.Join(eligible, ", "))
	}
	c.client(o, b, holder)
	for _, n := range o.Nodes {
		c.leaks(n, b, base)
	}
	return c.vs
}

// checker collects the violations Check finds.
type checker struct{ vs []Violation }

func (c *checker) add(inv, format string, args ...any) {
	c.vs = append(c.vs, Violation{Invariant: inv, Detail: fmt.Sprintf(format, args...)})
}

// holders checks that one node has the VIP, unless none is eligible, and
// returns the eligible nodes.
func (c *checker) holders(nodes []Node) (eligible []string) {
	var holders []string
	for _, n := range nodes {
		if n.HasVIP {
			holders = append(holders, n.Name)
		}
		if n.Eligible && n.StatusErr == "" {
			eligible = append(eligible, n.Name)
		}
	}
	switch {
	case len(holders) > 1:
		c.add(InvOneHolder, "%d nodes have the VIP: %s", len(holders), strings.Join(holders, ", "))
	case len(holders) == 0 && len(eligible) > 0:
		c.add(InvOneHolder, "no node has the VIP, though %s are eligible", strings.Join(eligible, ", "))
	}
	return eligible
}

// views checks that n answers, names holder as do the peers it hears, and
// neither has nor claims the VIP unless it is the holder.
func (c *checker) views(n Node, holder string) {
	if n.StatusErr != "" {
		c.add(InvViews, "%s: admin API: %s", n.Name, n.StatusErr)
		return
	}
	if n.View != holder {
		c.add(InvViews, "%s elects %q, the others %q", n.Name, n.View, holder)
	}
	for _, peer := range sortedKeys(n.Peers) {
		if v := n.Peers[peer]; v != holder {
			c.add(InvViews, "%s hears %s gossip holder %q, want %q", n.Name, peer, v, holder)
		}
	}
	if n.HasVIP && n.Name != holder {
		c.add(InvLeftover, "%s has the VIP on its interface but %q holds it", n.Name, holder)
	}
	if n.Claims != (n.Name == holder) {
		c.add(InvLeftover, "%s claims the VIP: %v, but the holder is %q", n.Name, n.Claims, holder)
	}
}

// client checks what the client saw: every port reached, its neighbour
// entry on the holder's MAC, no long wait on a dead control plane.
func (c *checker) client(o Observation, b Bounds, holder string) {
	for _, r := range o.Reach {
		if !r.OK {
			c.add(InvReach, "VIP:%d not reached within %s: %s", r.Port, b.Reach, r.Err)
		}
	}
	for _, n := range o.Nodes {
		if holder != "" && n.Name == holder && n.MAC != "" && o.ClientMAC != n.MAC {
			c.add(InvNeighbour, "the client's neighbour entry for the VIP is %q, want %s's %s", o.ClientMAC, holder, n.MAC)
		}
	}
	for _, w := range o.Waits {
		if w.Took > b.HealthCheck {
			c.add(InvDeadCP, "a client connection waited %s (bound %s) on %s: %s", w.Took.Round(time.Millisecond), b.HealthCheck, orNone(w.CP), w.What)
		}
	}
}

// leaks compares n's goroutines and RSS with its process's baseline.
func (c *checker) leaks(n Node, b Bounds, base map[string]Baseline) {
	bl, ok := base[n.Name]
	if !ok || bl.PID != n.PID || n.PID == 0 {
		return
	}
	if n.Goroutines > 0 && bl.Goroutines > 0 && n.Goroutines > bl.Goroutines+b.Goroutines {
		c.add(InvLeak, "%s (pid %d) has %d goroutines, baseline %d", n.Name, n.PID, n.Goroutines, bl.Goroutines)
	}
	if n.RSS > 0 && bl.RSS > 0 && float64(n.RSS) > float64(bl.RSS)*b.RSSFactor+float64(b.RSSSlack) {
		c.add(InvLeak, "%s (pid %d) RSS %d MiB, baseline %d MiB", n.Name, n.PID, n.RSS>>20, bl.RSS>>20)
	}
}

// agreed returns the holder most nodes that answered elect ("" if none).
func agreed(nodes []Node) string {
	votes := map[string]int{}
	best, most := "", 0
	for _, n := range nodes {
		if n.StatusErr != "" {
			continue
		}
		votes[n.View]++
		if c := votes[n.View]; c > most || (c == most && n.View < best) {
			best, most = n.View, c
		}
	}
	return best
}

func orNone(s string) string {
	if s == "" {
		return "no control plane"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Settled says whether nodes have converged after a step: every node
// answers and hears every other alive, all of them and all of their peers'
// gossiped views name one holder, and that holder alone has the VIP on its
// interface, and no node is about to preempt it. It returns the holder,
// or why not.
func Settled(nodes []Node) (holder, why string) {
	for _, n := range nodes {
		if n.StatusErr != "" {
			return "", n.Name + ": " + n.StatusErr
		}
	}
	holder = agreed(nodes)
	if holder == "" {
		return "", "no node elects a holder"
	}
	for _, n := range nodes {
		if n.View != holder {
			return "", fmt.Sprintf("%s elects %q, others %q", n.Name, n.View, holder)
		}
		for _, m := range nodes {
			if m.Name == n.Name {
				continue
			}
			v, alive := n.Peers[m.Name]
			if !alive {
				return "", fmt.Sprintf("%s does not see %s alive", n.Name, m.Name)
			}
			if v != holder {
				return "", fmt.Sprintf("%s hears %s gossip holder %q", n.Name, m.Name, v)
			}
		}
		if n.HasVIP != (n.Name == holder) {
			return "", fmt.Sprintf("%s has the VIP: %v, holder %s", n.Name, n.HasVIP, holder)
		}
	}
	// A preemption that is due is a handover on its way, not a settled
	// cluster: judging in the middle of it would see two holders.
	for _, n := range nodes {
		if !n.PreemptAt.IsZero() {
			return "", fmt.Sprintf("%s takes the VIP over from %s at %s (preempt_delay)",
				n.Name, holder, n.PreemptAt.Format("15:04:05.000"))
		}
	}
	return holder, ""
}
