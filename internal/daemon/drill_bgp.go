package daemon

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"halb/internal/admin"
	"halb/internal/config"
)

// bgpVIP names the BGP VIP a drill request is for: the one it names, or
// the first BGP VIP when it names none and this node has no ARP VIP.
func (d *drills) bgpVIP(name string) (string, bool) {
	b := d.ctl.bgp
	if b == nil || len(b.vips) == 0 {
		return "", false
	}
	if name == "" {
		if len(d.ctl.announcers) > 0 {
			return "", false
		}
		return b.vips[0].cfg.Address.Addr().String(), true
	}
	for _, v := range b.vips {
		if a := v.cfg.Address.Addr().String(); a == admin.BareIP(name) {
			return a, true
		}
	}
	return "", false
}

// startBGP asks one node (req.Node, or this one) to withdraw a BGP VIP
// for a while by leaving eligibility, as maintenance would: the routers
// send its share to the other announcers, and it keeps serving what they
// still send until they converge. It refuses when no other node announces
// the VIP: the drill would take it off the network.
func (d *drills) startBGP(req admin.DrillRequest, vip string) (admin.DrillStart, error) {
	if d.ctl.cluster == nil {
		return admin.DrillStart{}, errNoDrill
	}
	if req.Hard || req.To != "" {
		return admin.DrillStart{}, fmt.Errorf("%s is announced by BGP from every eligible node: a drill withdraws one node (--node), it has no --to or --hard: %w", vip, admin.ErrInvalid)
	}
	now := time.Now()
	if err := d.refuseSecond(now); err != nil {
		return admin.DrillStart{}, err
	}
	from := req.Node
	if from == "" {
		from = d.ctl.name
	}
	var announcers, others []string
	for _, m := range d.ctl.cluster.Members() {
		if m.Alive && m.StateErr == "" && slices.Contains(m.State.Holds, vip) {
			announcers = append(announcers, m.Name)
			if m.Name != from {
				others = append(others, m.Name)
			}
		}
	}
	switch {
	case !slices.Contains(announcers, from):
		return admin.DrillStart{}, fmt.Errorf("%s does not announce %s (announcing: %s): nothing to withdraw: %w",
			from, vip, orNone(announcers), admin.ErrInvalid)
	case len(others) == 0:
		return admin.DrillStart{}, fmt.Errorf("%s is the only node announcing %s: a drill would take the VIP off the network: %w", from, vip, admin.ErrInvalid)
	}
	hold, err := holdFor(req)
	if err != nil {
		return admin.DrillStart{}, err
	}
	if err := d.send(from, drillMsg{Op: opYield, For: hold}); err != nil {
		return admin.DrillStart{}, err
	}
	start := admin.DrillStart{VIP: vip, From: from, To: strings.Join(others, ", "), Started: now, Mode: string(config.AnnounceBGP)}
	d.mu.Lock()
	d.started, d.deadline = &start, now.Add(hold)
	d.from, d.to = from, ""
	d.mu.Unlock()
	d.log.Info("BGP drill started", "vip", vip, "withdraws", from, "announcing", start.To, "hold", hold)
	return start, nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
