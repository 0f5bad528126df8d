package election

import "halb/internal/config"

// Member is one alive node as the caller sees it, with the gossiped facts the
// election needs.
type Member struct {
	Name     string
	Priority int
	// Eligible means the node has a healthy server in every frontend it must
	// serve; it is false in maintenance or when the node's witness is unreachable.
	Eligible bool
	// Stable means the node has been eligible for at least preempt_delay, as
	// measured on its own clock, so every node reads the same gossiped value.
	Stable bool
	// Holds means the node claims the VIP now.
	Holds bool
	// Leaving means the node gives the VIPs up by choice (maintenance or
	// shutting down): it lets go of them whatever the election says, so
	// it is the last choice to keep one when nobody is eligible.
	Leaving bool
}

// Options tune the election.
type Options struct {
	Policy config.Policy
	// Quorum is 0 to disable the quorum rule, else the number of configured
	// nodes; fewer than a majority of them alive means nobody owns the VIP.
	Quorum int
}

// Owner returns the name of the member that should hold the VIP, or "" for
// nobody. members must be the alive members the caller sees, itself included.
// The result does not depend on the order of members, so every node that sees
// the same members computes the same owner.
func Owner(members []Member, opt Options) string {
	if opt.Quorum > 0 && len(members) < opt.Quorum/2+1 {
		return ""
	}
	if len(members) == 0 {
		return ""
	}

	eligible := func(m Member) bool { return m.Eligible }
	eligibleHolder := func(m Member) bool { return m.Eligible && m.Holds }

	bestEligible, ok := best(members, eligible)
	if !ok {
		return nobodyEligible(members)
	}

	h, held := best(members, eligibleHolder)
	if !held {
		// Failover never waits for preempt_delay.
		return bestEligible.Name
	}
	if opt.Policy == config.Sticky {
		return h.Name
	}
	// Preempt: only a stable, strictly better node takes the VIP from an
	// eligible holder, so a flapping node cannot bounce it around.
	challenger, ok := best(members, func(m Member) bool {
		return m.Eligible && m.Stable && m.Priority > h.Priority
	})
	if ok {
		return challenger.Name
	}
	return h.Name
}

// nobodyEligible picks the owner when no member is eligible. A VIP in
// front of unhealthy backends beats no VIP: the current holder keeps it.
// With no holder at all (bootstrap, when the API servers behind the VIP
// are not up yet) the best node takes it. A leaving member comes last
// either way: it drops the VIP whatever it is told, so electing it would
// leave the VIP on nobody, while a staying member taking it over first
// keeps the move make-before-break.
func nobodyEligible(members []Member) string {
	rules := []func(Member) bool{
		func(m Member) bool { return m.Holds && !m.Leaving },
		func(m Member) bool { return !m.Leaving },
		func(m Member) bool { return m.Holds },
	}
	for _, keep := range rules {
		if b, ok := best(members, keep); ok {
			return b.Name
		}
	}
	b, _ := best(members, func(Member) bool { return true })
	return b.Name
}

// best returns the member matching keep with the highest priority, ties
// broken by the lexically smallest name; ok is false when none matches.
func best(members []Member, keep func(Member) bool) (Member, bool) {
	var b Member
	found := false
	for _, m := range members {
		if !keep(m) {
			continue
		}
		if !found || better(m, b) {
			b, found = m, true
		}
	}
	return b, found
}

func better(a, b Member) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Name < b.Name
}
