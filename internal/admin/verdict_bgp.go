package admin

import (
	"slices"
	"strings"
)

// bgp judges the VIPs announced by BGP and this node's sessions. In BGP
// mode every eligible node carries a share of the traffic, so a node not
// announcing is capacity and redundancy lost (degraded), and a VIP no
// node announces has no route at all (fail). A session that is not
// established leaves that router without this node's routes.
func (j *judge) bgp() {
	b := j.s.BGP
	if b == nil {
		return
	}
	for _, p := range b.Peers {
		if p.State == "established" {
			continue
		}
		since := ""
		if !p.Since.IsZero() && !j.s.Time.IsZero() {
			since = " for " + Duration(j.s.Time.Sub(p.Since))
		}
		j.add(LevelDegraded, "BGP peer %s (AS %d): session %s%s, not established: that router has no route to this node's VIPs",
			p.Address, p.ASN, orDash(p.State), since)
	}
	for _, v := range b.VIPs {
		j.bgpVIP(v)
	}
}

// bgpVIP counts the members announcing v: this node by its own state,
// the others by the VIPs they gossip as added.
func (j *judge) bgpVIP(v BGPVIP) {
	var on, off []string
	self := false
	for _, m := range j.s.Members {
		announces := m.Alive && slices.ContainsFunc(m.Holds, func(h string) bool { return BareIP(h) == v.Address })
		if m.Local {
			self, announces = true, v.Announced
		}
		if announces {
			on = append(on, m.Name)
		} else {
			off = append(off, m.Name)
		}
	}
	if !self {
		// Not joined yet: this node is all it knows of.
		if v.Announced {
			on = append(on, orDash(j.s.Node.Name))
		} else {
			off = append(off, orDash(j.s.Node.Name))
		}
	}
	if v.LastError != "" {
		j.add(LevelDegraded, "BGP VIP %s: %s", v.Address, v.LastError)
	}
	switch {
	case len(on) == 0:
		j.add(LevelFail, "BGP VIP %s: no member announces it: routers have no route to it", v.Address)
	case len(off) > 0:
		j.add(LevelDegraded, "BGP VIP %s: announced by %d of %d members (%s); not by %s",
			v.Address, len(on), len(on)+len(off), strings.Join(on, ", "), strings.Join(off, ", "))
	}
}
