package haproxy

import (
	"fmt"
	"strings"
)

// keepalived's defaults for a vrrp_instance that does not say.
const (
	keepalivedPriority = 100
	keepalivedState    = "BACKUP"
	// priorityStep separates assumed priorities, leaving room to insert a
	// node between two by hand.
	priorityStep = 10
	maxPriority  = 1000 // halb's highest
)

// planPriorities gives each node a priority that keeps keepalived's order.
// A keepalived.conf describes one host: its state and priority. That host
// keeps both; a MASTER stays the preferred node, so the others are placed
// below it, and a BACKUP's MASTER is somewhere else, so the first other
// node is placed above it and the rest below. Priorities given on the
// command line always win. note states the assumption for the operator;
// it is "" when nothing was assumed.
func planPriorities(nodes []Node, k *Keepalived) (prios []*int, note string) {
	prios = make([]*int, len(nodes))
	for i, n := range nodes {
		prios[i] = n.Priority
	}
	if k == nil || (k.Priority == nil && k.State == "") {
		return prios, ""
	}
	p := keepalivedPriority
	if k.Priority != nil {
		p = *k.Priority
	}
	state, stateSaid := k.State, "state "+k.State
	if state == "" {
		state, stateSaid = keepalivedState, "no state (keepalived starts it as "+keepalivedState+")"
	}
	self, how := keepalivedHost(nodes, k)
	if self < 0 {
		return prios, fmt.Sprintf("keepalived.conf says %s, priority %d, for its own host, which is none of the --node hosts (matched by unicast_src_ip, else router_id): every node without NAME=ADDRESS:PRIORITY gets halb's default, so the preferred node may change; give each node its priority", stateSaid, p)
	}
	set := func(i, v int) {
		v = min(max(v, 0), maxPriority)
		prios[i] = &v
	}
	var assumed []string
	if prios[self] == nil {
		set(self, p)
	}
	below := 0
	masterPlaced := state == "MASTER"
	for i := range nodes {
		if i == self || prios[i] != nil {
			continue
		}
		if !masterPlaced {
			masterPlaced = true
			set(i, p+priorityStep)
			assumed = append(assumed, fmt.Sprintf("%s %d (taken as the MASTER)", nodes[i].Name, *prios[i]))
			continue
		}
		below++
		set(i, p-below*priorityStep)
		assumed = append(assumed, fmt.Sprintf("%s %d (a BACKUP)", nodes[i].Name, *prios[i]))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s is the keepalived.conf's host (%s): %s, priority %d there, so %s priority %d", nodes[self].Name, how, stateSaid, p, nodes[self].Name, *prios[self])
	if state == "MASTER" {
		b.WriteString(" and stays the preferred node")
	}
	if len(assumed) > 0 {
		fmt.Fprintf(&b, "; assumed for the others, in --node order: %s", strings.Join(assumed, ", "))
	}
	b.WriteString(". Check against each host's keepalived.conf, or give NAME=ADDRESS:PRIORITY")
	return prios, b.String()
}

// keepalivedHost returns the index of the node the keepalived.conf
// describes and how it was recognised, or -1. unicast_src_ip names the
// host exactly; router_id, often the host name, is used only without it.
func keepalivedHost(nodes []Node, k *Keepalived) (int, string) {
	self, how := -1, ""
	for i, n := range nodes {
		switch {
		case k.SrcIP.IsValid() && n.Address == k.SrcIP:
			self, how = i, "its unicast_src_ip "+k.SrcIP.String()
		case self < 0 && !k.SrcIP.IsValid() && k.RouterID != "" && n.Name == k.RouterID:
			self, how = i, "its router_id "+k.RouterID
		}
	}
	return self, how
}
