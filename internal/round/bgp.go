package round

// BGPPlan is a round's decision for one VIP announced by BGP.
type BGPPlan struct {
	VIP string
	// Announce: this node announces the VIP; false withdraws it.
	Announce bool
	Reason   string
}

// DecideBGP says, for each VIP announced by BGP (vips, by address),
// whether this node announces it, given the round's inputs and the plan
// Decide made from them. There is no owner: every eligible node announces
// and the routers spread the flows over them (ECMP). A node announces on
// the same facts the election grants a VIP on — settled health, a ready
// cluster, eligibility (healthy frontends, not in maintenance or
// stopping, the witness reachable), a quorum where configured, and no
// reason to stand down — so the two modes agree on when a node serves.
func DecideBGP(in Inputs, p Plan, vips []string) []BGPPlan {
	announce, why := bgpVerdict(in, p)
	out := make([]BGPPlan, len(vips))
	for i, v := range vips {
		out[i] = BGPPlan{VIP: v, Announce: announce, Reason: why}
	}
	return out
}

// bgpVerdict is the one decision every BGP VIP of this node shares: the
// VIPs differ only in their routes' attributes.
func bgpVerdict(in Inputs, p Plan) (bool, string) {
	st := p.Memory.Published
	switch {
	case !p.Memory.Settled || st == nil:
		return false, "health not known yet"
	case in.Local.Leaving:
		return false, "stopping"
	case in.Local.Maintenance:
		return false, "maintenance"
	case !in.Ready || p.Alive == nil:
		return false, "cluster not ready"
	}
	if d := standDown(in, len(p.Alive)); d != "" {
		return false, d
	}
	if !st.Eligible {
		return false, "not eligible: " + ineligibleBecause(in)
	}
	if n := len(in.Config.Nodes); in.Config.Quorum && len(p.Alive) < n/2+1 {
		return false, "no quorum: a minority must not announce the VIP"
	}
	return true, "eligible"
}

// ineligibleBecause names why localState found this node ineligible.
func ineligibleBecause(in Inputs) string {
	if yield, _, silenced := drillRoles(in.Local.Drill, in.Now); yield || silenced {
		return "drill"
	}
	if in.Config.Witness && !in.Local.WitnessReachable {
		return "witness unreachable"
	}
	return "frontends not listening or not healthy"
}
