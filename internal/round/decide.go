package round

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"halb/internal/cluster"
	"halb/internal/election"
)

const (
	// SettleTimeout bounds how long a peer without a readable state, or
	// this node without health results, holds back claims.
	SettleTimeout = 5 * time.Second

	// HandoverConfirm is how long an eligible holder keeps the VIP after
	// it elected another holder, before letting go: longer than a state
	// change takes to gossip, so a stale view cannot make two holders both
	// let go.
	HandoverConfirm = 250 * time.Millisecond

	// NeighLocktime is a bit more than Linux's default neigh locktime
	// (1 s): ARP answers within it of the last update are ignored.
	NeighLocktime = 1100 * time.Millisecond

	// BoostPriority outranks any configured priority (at most 1000).
	BoostPriority = 100000
)

// Decide runs one round: it computes the state this node gossips, elects
// each VIP's owner from every alive member's state, and says what to do
// with each VIP and why. It reads no clock and changes neither its inputs
// nor mem; the memory for the next round is in the plan.
func Decide(in Inputs, mem Memory) Plan {
	next := mem.clone()
	p := Plan{}
	// Settled first: publishing "ineligible" before the first checks have
	// answered would let a peer elect itself on a state about to change.
	if !next.Settled {
		next.Settled = in.Local.HealthKnown || in.Now.Sub(in.Local.Started) >= SettleTimeout
	}
	if !next.Settled {
		p.Memory = next
		return p
	}
	st := localState(in, &next)
	if next.Published == nil || !reflect.DeepEqual(st, *next.Published) {
		p.Publish = &st
		next.Published = &st
	}
	if !in.Ready {
		p.Memory = next
		return p
	}
	decideVIPs(in, st, &next, &p)
	p.Memory = next
	return p
}

// localState is what this node gossips about itself; it moves
// mem.EligibleSince.
func localState(in Inputs, mem *Memory) cluster.State {
	l := in.Local
	fronts := make(map[string]bool, len(l.Frontends))
	for _, f := range l.Frontends {
		fronts[f.Name] = f.Listening && f.Healthy
	}
	yield, boost, silenced := drillRoles(l.Drill, in.Now)
	eligible := eligibleByFrontends(in.Config.Eligibility, l.Frontends) &&
		!l.Leaving && !l.Maintenance && !yield && !silenced &&
		// A node that cannot reach the witness is probably the one cut
		// off: it must not hold the VIP while its peer may.
		(!in.Config.Witness || l.WitnessReachable)
	if !eligible {
		mem.EligibleSince = time.Time{}
	} else if mem.EligibleSince.IsZero() {
		mem.EligibleSince = in.Now
	}
	stable := eligible && in.Now.Sub(mem.EligibleSince) >= in.Config.PreemptDelay
	priority := in.Config.Priority
	if boost && eligible {
		// A drill's target outranks everyone at once: it must not wait
		// for preempt_delay, which guards against flapping, not drills.
		priority, stable = BoostPriority+in.Config.Priority, true
	}
	var holds []string
	for _, v := range in.VIPs {
		if v.Held {
			holds = append(holds, v.Addr)
		}
	}
	// A BGP VIP is on this node's interface while announced too; no ARP
	// VIP shares its address, so the election is not affected.
	holds = append(holds, l.Announced...)
	return cluster.State{
		Priority:    priority,
		Eligible:    eligible,
		Stable:      stable,
		Maintenance: l.Maintenance || l.Leaving,
		Frontends:   fronts,
		Holds:       holds,
		// The previous round's view: this round's is not known yet.
		Holder:      maps.Clone(mem.Holder),
		Fingerprint: in.Config.Fingerprint,
		Version:     in.Config.Version,
	}
}

// drillRoles reports this node's drill roles at now.
func drillRoles(d Drill, now time.Time) (yield, boost, silenced bool) {
	return now.Before(d.YieldUntil), now.Before(d.BoostUntil), now.Before(d.SilencedUntil)
}

// eligibleByFrontends decides from its frontends whether a node may hold
// the VIPs. Every frontend must listen, whatever the policy: clients of a
// port nobody listens on here are refused, where another node would serve
// them. Then every frontend's backend must be healthy, or with policy
// any_frontend at least one.
func eligibleByFrontends(policy string, fronts []Frontend) bool {
	healthy := 0
	for _, f := range fronts {
		if !f.Listening {
			return false
		}
		if f.Healthy {
			healthy++
		}
	}
	if policy == "any_frontend" {
		return healthy > 0
	}
	return healthy == len(fronts)
}

// view is one round's reading of the members, shared by every VIP.
type view struct {
	states     map[string]cluster.State // alive members' states, this node's fresh one included
	base       []election.Member        // alive members, Holds unset
	opts       election.Options
	unsettled  string // a peer whose state is not known yet, "" if none
	standDown  string // why this node must hold nothing, "" if it may
	keyConf    bool   // alone while configured peers use another gossip key
	reannounce bool   // the member list changed
}

// decideVIPs elects and plans every VIP.
func decideVIPs(in Inputs, st cluster.State, mem *Memory, p *Plan) {
	alive, listed := make([]string, 0, len(in.Members)), make([]string, 0, len(in.Members))
	for _, m := range in.Members {
		listed = append(listed, m.Name)
		if m.Alive {
			alive = append(alive, m.Name)
		}
	}
	slices.Sort(alive)
	slices.Sort(listed)
	p.Alive = alive
	p.MembersChanged = mem.Alive != nil && !slices.Equal(alive, mem.Alive)
	v := view{
		states:    make(map[string]cluster.State, len(in.Members)),
		unsettled: unsettled(in),
		standDown: standDown(in, len(alive)),
		keyConf:   len(alive) <= 1 && in.Local.Incompatible > 0,
		// memberlist removing a member the heartbeat already gave up on
		// changes no election, but is worth a new announcement too.
		// The first ready round counts as a change, as every later one
		// that adds or removes a member.
		reannounce: !slices.Equal(alive, mem.Alive) || (mem.Listed != nil && !slices.Equal(listed, mem.Listed)),
	}
	mem.Alive, mem.Listed = alive, listed
	if in.Config.Quorum {
		v.opts.Quorum = len(in.Config.Nodes)
	}
	v.opts.Policy = in.Config.Policy
	p.Strangers = strangers(in, alive, mem)
	for _, m := range in.Members {
		if !m.Alive {
			continue
		}
		s := m.State
		if m.Local {
			s = st
		}
		v.states[m.Name] = s
		v.base = append(v.base, election.Member{
			Name:     m.Name,
			Priority: s.Priority,
			// A peer whose state did not decode cannot prove its health.
			Eligible: s.Eligible && !m.StateErr,
			Stable:   s.Stable && !m.StateErr,
			// Maintenance is gossiped for a stop too: either way the
			// member drops the VIPs, so it must not be elected to keep one.
			Leaving: s.Maintenance,
		})
	}
	for _, vip := range in.VIPs {
		p.VIPs = append(p.VIPs, decideVIP(in, st, v, vip, mem, &p.WakeAt))
	}
}

// unsettled names a peer that joined a moment ago and has not published a
// readable state yet: claiming before it has would be deciding on half
// the facts. The smallest such name, so the plan does not depend on the
// members' order.
func unsettled(in Inputs) string {
	name := ""
	for _, m := range in.Members {
		if !m.Local && m.StateErr && in.Now.Sub(m.Since) < SettleTimeout && (name == "" || m.Name < name) {
			name = m.Name
		}
	}
	return name
}

// standDown says why this node must hold no VIP whatever the election
// says, or "". These are facts only this node knows about itself; they
// override election rule 2 ("nobody eligible: the holder keeps it"),
// which would otherwise make a cut-off node a second holder.
func standDown(in Inputs, alive int) string {
	if _, _, silenced := drillRoles(in.Local.Drill, in.Now); silenced {
		return "hard drill: silent as if crashed"
	}
	if alive <= 1 && in.Config.Witness && !in.Local.WitnessReachable && len(in.Config.Nodes) > 1 {
		return "alone and the witness is unreachable: this node is the one cut off"
	}
	return ""
}

// strangers lists, once per name, alive members not in cluster.nodes.
// They still take part in the election: leaving one out here, while its
// own config counts it, would give two elections and two holders.
func strangers(in Inputs, alive []string, mem *Memory) []string {
	var out []string
	for _, n := range alive {
		if mem.Strangers[n] || slices.Contains(in.Config.Nodes, n) {
			continue
		}
		mem.Strangers[n] = true
		out = append(out, n)
	}
	return out
}

// decideVIP elects the owner of one VIP and plans for it.
func decideVIP(in Inputs, st cluster.State, v view, vip VIP, mem *Memory, wakeAt *time.Time) VIPPlan {
	em := slices.Clone(v.base)
	for i := range em {
		em[i].Holds = slices.Contains(v.states[em[i].Name].Holds, vip.Addr)
	}
	owner := election.Owner(em, v.opts)
	if v.standDown != "" || (v.keyConf && !vip.Held) {
		// A node started with a stale key must not take the VIP from a
		// healthy one; one it already holds it keeps.
		owner = ""
	}
	vp := VIPPlan{VIP: vip.Addr, Owner: owner, Previous: mem.Holder[vip.Addr]}
	mem.Holder[vip.Addr] = owner
	vp.PreemptAt = preemptAt(in, em, v.opts, owner, st, mem.EligibleSince, v.standDown != "" || v.keyConf)
	ownerHolds := owner != "" && takenOver(v.states[owner], owner, vip.Addr)
	vp.Action, vp.Reason = act(in, v, vip, owner, ownerHolds, mem, wakeAt)
	if owner == in.Self || !vip.Held || !ownerHolds {
		delete(mem.HandoverSince, vip.Addr)
	}
	vp.Announce, vp.Regained = staleNeighbours(in, v, vip, owner, mem)
	return vp
}

// takenOver reports whether owner's gossiped state s shows it holding vip
// as its owner. Holding alone is not enough: a holder that has just
// elected another node still gossips that it holds the VIP until it lets
// go, and a node stopping at that moment would hand the VIP over to one
// about to release it, leaving it on nobody. A state without the owner's
// view (shrunk to fit the gossip metadata) proves only that it holds.
func takenOver(s cluster.State, owner, vip string) bool {
	if !slices.Contains(s.Holds, vip) {
		return false
	}
	view, ok := s.Holder[vip]
	return !ok || view == owner
}

// act is the claim-or-release rule for one VIP.
func act(in Inputs, v view, vip VIP, owner string, ownerHolds bool, mem *Memory, wakeAt *time.Time) (Action, string) {
	switch {
	case owner == in.Self && v.unsettled != "" && !vip.Held:
		return Keep, "not claiming yet: the state of peer " + v.unsettled + " is not known"
	case owner == in.Self:
		return Claim, fmt.Sprintf("elected (priority %d, policy %s)", in.Config.Priority, v.opts.Policy)
	case !vip.Held && !vip.Claiming:
		return Release, "not elected"
	case v.standDown != "":
		return Release, v.standDown
	case owner == "":
		return Release, "no quorum: a minority must not hold the VIP"
	case !ownerHolds && slices.Contains(v.states[owner].Holds, vip.Addr):
		return Keep, "make before break: " + owner + " holds it but elected " + orNobody(v.states[owner].Holder[vip.Addr])
	case !ownerHolds:
		return Keep, "make before break: waiting for " + owner + " to hold it"
	}
	// Make before break: release only once the new owner holds it. A
	// node also waits HandoverConfirm with the election unchanged: two
	// holders can each elect the other on a stale view (one is stopping,
	// the other has not heard yet) and would both let go. Only a node
	// giving up by choice lets go at once, so one of the two always keeps
	// the VIP. One ineligible by its health waits too: it is not going
	// away, and a backend check failing during a peer's stop must not
	// make it drop the VIP on a view that still shows the peer holding.
	if !givingUp(in) {
		since, ok := mem.HandoverSince[vip.Addr]
		if !ok {
			since = in.Now
			mem.HandoverSince[vip.Addr] = since
		}
		if at := since.Add(HandoverConfirm); in.Now.Before(at) {
			*wakeAt = earliest(*wakeAt, at)
			return Keep, "handing over to " + owner + " once it is confirmed"
		}
	}
	return Release, "handed over to " + owner
}

// givingUp reports whether this node gives its VIPs up by its own
// choice or knowledge: an operator's maintenance, a stop, a drill's yield,
// or a witness it cannot reach (it is probably the one cut off). Such a
// node lets a VIP go as soon as the new owner holds it.
func givingUp(in Inputs) bool {
	yield, _, _ := drillRoles(in.Local.Drill, in.Now)
	return in.Local.Maintenance || in.Local.Leaving || yield ||
		(in.Config.Witness && !in.Local.WitnessReachable)
}

// staleNeighbours says why neighbours may hold a stale ARP entry for a VIP
// held here, or "". Three events leave one behind: the membership changed
// (a member that went may have been the last to announce); a neighbour
// confirmed the old holder's MAC less than its locktime before the claim
// and ignored the claim's burst; or another holder let go that may have
// been the last to announce (it took over while this node was frozen or
// cut off). It also remembers which of them it has seen. regained is
// the last case: the other holder let go of a VIP held here.
func staleNeighbours(in Inputs, v view, vip VIP, owner string, mem *Memory) (why string, regained bool) {
	late := vip.Held && !mem.LateAnnounced[vip.Addr] && in.Now.Sub(vip.HeldSince) >= NeighLocktime
	if late {
		mem.LateAnnounced[vip.Addr] = true
	} else if !vip.Held {
		mem.LateAnnounced[vip.Addr] = false
	}
	contested := false
	for name, s := range v.states {
		if name != in.Self && slices.Contains(s.Holds, vip.Addr) {
			contested = true
		}
	}
	if contested && !mem.Contested[vip.Addr] {
		mem.HeldWhenContested[vip.Addr] = vip.Held
	}
	released := mem.Contested[vip.Addr] && !contested && owner == in.Self
	// Only a VIP held here before the other holder came is regained: a
	// claim made while the old holder lets go (a planned move) has no
	// sessions the other could have taken over.
	regained = released && mem.HeldWhenContested[vip.Addr]
	if !contested {
		delete(mem.HeldWhenContested, vip.Addr)
	}
	mem.Contested[vip.Addr] = contested
	switch {
	case !vip.Held:
		return "", false
	case v.reannounce:
		return "membership changed", regained
	case late:
		return "neighbours' ARP locktime passed since the claim", regained
	case released:
		return "another holder released the VIP", regained
	}
	return "", false
}

// preemptAt is when this node will take the VIP from owner once it has
// been eligible for preempt_delay, if nothing else changes; zero when it
// will not. Operators (and the chaos run's settle check) see a pending
// preemption coming instead of being surprised by it.
func preemptAt(in Inputs, em []election.Member, opts election.Options, owner string, st cluster.State,
	eligibleSince time.Time, blocked bool) time.Time {
	if blocked || owner == in.Self || !st.Eligible || st.Stable || eligibleSince.IsZero() {
		return time.Time{}
	}
	em = slices.Clone(em)
	for i := range em {
		if em[i].Name == in.Self {
			em[i].Stable = true
		}
	}
	if election.Owner(em, opts) != in.Self {
		return time.Time{}
	}
	return eligibleSince.Add(in.Config.PreemptDelay)
}

// orNobody names an elected owner, "" being nobody.
func orNobody(name string) string {
	if name == "" {
		return "nobody"
	}
	return name
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
