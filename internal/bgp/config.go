package bgp

import (
	"fmt"
	"math"
	"net/netip"

	"halb/internal/config"
)

// BackupMED is added to a VIP's MED on every node but its preferred one,
// so a router takes the preferred node's path alone while it is announced
// and the backups' paths the moment it is withdrawn. A MED, unlike an
// AS-path prepend, also works for iBGP peers, and all nodes share one
// ASN, so routers compare their MEDs.
const BackupMED = 1000

// ConfigFor is the Speaker config of node: its own address is the router
// id (unless the config sets one) and the next hop of its routes.
func ConfigFor(c *config.BGP, node config.Node) (Config, error) {
	if c == nil {
		return Config{}, fmt.Errorf("node %s: no bgp section", node.Name)
	}
	addr := node.Address.Unmap()
	sc := Config{LocalASN: c.LocalASN, RouterID: c.RouterID, ListenPort: c.ListenPort}
	if !sc.RouterID.IsValid() {
		sc.RouterID = addr
	}
	if addr.Is4() {
		sc.NextHop = addr
	} else {
		sc.NextHop6 = addr
	}
	for _, p := range c.Peers {
		sc.Peers = append(sc.Peers, Peer{
			Address: p.Address, ASN: p.ASN, Port: p.Port, Local: addr,
			PasswordFile: p.PasswordFile, HoldTime: p.HoldTime, Keepalive: p.Keepalive,
		})
	}
	if err := sc.check(); err != nil {
		return Config{}, fmt.Errorf("node %s: %w", node.Name, err)
	}
	return sc, nil
}

// RouteFor is the route node announces for vip: the VIP as a host prefix
// with its attributes, and BackupMED added when vip prefers another node.
func RouteFor(vip config.VIP, node string) Route {
	a := vip.Address.Addr().Unmap()
	r := Route{
		Prefix: netip.PrefixFrom(a, a.BitLen()),
		Attributes: Attributes{
			Communities: vip.Communities,
			LocalPref:   vip.LocalPref,
			MED:         vip.MED,
		},
	}
	if vip.Prefer != "" && vip.Prefer != node {
		med := uint64(BackupMED)
		if vip.MED != nil {
			med += uint64(*vip.MED)
		}
		m := uint32(min(med, math.MaxUint32))
		r.MED = &m
	}
	return r
}
