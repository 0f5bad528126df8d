package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Announce names how a VIP is made known to the network.
type Announce string

// Announcement modes.
const (
	// AnnounceARP: one node holds the VIP on a LAN interface and sends
	// gratuitous ARP (the default).
	AnnounceARP Announce = "arp"
	// AnnounceBGP: every eligible node holds the VIP on a local interface
	// and announces it as a host route to the BGP peers.
	AnnounceBGP Announce = "bgp"
)

// BGP defaults, documented in docs/bgp.md.
const (
	// DefaultBGPHoldTime bounds how long a hung node keeps its share of
	// the flows; a crashed node's session closes at once.
	DefaultBGPHoldTime = 9 * time.Second
	DefaultBGPPort     = 179
	// DefaultBGPInterface is where a BGP VIP sits: a local interface,
	// so the node answers no ARP for it.
	DefaultBGPInterface = "lo"
)

// BGP configures the speaker that announces VIPs with announce: bgp.
type BGP struct {
	LocalASN uint32
	// RouterID is the BGP identifier; invalid: each node uses its own
	// cluster address, which keeps one config file valid on every node.
	RouterID netip.Addr
	// ListenPort is where peers may dial in; 0 (default): halb only dials.
	ListenPort uint16
	Peers      []BGPPeer
}

// BGPPeer is one router the nodes announce to.
type BGPPeer struct {
	Address netip.Addr
	ASN     uint32
	Port    uint16
	// PasswordFile holds the TCP MD5 password (first line); "" for none.
	PasswordFile string
	HoldTime     time.Duration // whole seconds, 3s or more
	Keepalive    time.Duration // whole seconds, shorter than HoldTime
}

type rawBGP struct {
	LocalASN   *int64       `yaml:"local_asn"`
	RouterID   string       `yaml:"router_id"`
	ListenPort *int         `yaml:"listen_port"`
	HoldTime   string       `yaml:"hold_time"`
	Keepalive  string       `yaml:"keepalive"`
	Peers      []rawBGPPeer `yaml:"peers"`
}

type rawBGPPeer struct {
	Address      string `yaml:"address"`
	ASN          *int64 `yaml:"asn"`
	Port         *int   `yaml:"port"`
	PasswordFile string `yaml:"password_file"`
	HoldTime     string `yaml:"hold_time"`
	Keepalive    string `yaml:"keepalive"`
}

func (v *validator) bgp(r *rawBGP, c *Cluster) *BGP {
	b := &BGP{}
	if c == nil {
		v.fail("bgp", "BGP announces the VIPs of a cluster: add a cluster section (a single node is a valid cluster)")
	}
	if r.LocalASN == nil {
		v.fail("bgp.local_asn", "local_asn is required (a private ASN such as 64512)")
	} else {
		b.LocalASN = v.asn("bgp.local_asn", *r.LocalASN)
	}
	b.RouterID = v.routerID(r.RouterID, c)
	if r.ListenPort != nil {
		if *r.ListenPort < 0 || *r.ListenPort > 65535 {
			v.fail("bgp.listen_port", "%d: want 1-65535, or 0 to only dial the peers", *r.ListenPort)
		} else {
			b.ListenPort = uint16(*r.ListenPort)
		}
	}
	hold, keep := v.bgpTimers("bgp", r.HoldTime, r.Keepalive, DefaultBGPHoldTime, 0)
	if len(r.Peers) == 0 {
		v.fail("bgp.peers", "at least one peer is needed (address and asn of a router)")
	}
	seen := map[netip.Addr]int{}
	for i, rp := range r.Peers {
		p := fmt.Sprintf("bgp.peers[%d]", i)
		peer := BGPPeer{Port: DefaultBGPPort, PasswordFile: rp.PasswordFile}
		peer.Address = v.peerAddress(p+".address", rp.Address)
		if peer.Address.IsValid() {
			if first, dup := seen[peer.Address]; dup {
				v.fail(p+".address", "%s is also bgp.peers[%d]", peer.Address, first)
			}
			seen[peer.Address] = i
			v.notANode(p+".address", peer.Address, c)
		}
		if rp.ASN == nil {
			v.fail(p+".asn", "the router's asn is required")
		} else {
			peer.ASN = v.asn(p+".asn", *rp.ASN)
		}
		if rp.Port != nil {
			if *rp.Port < 1 || *rp.Port > 65535 {
				v.fail(p+".port", "%d: want 1-65535", *rp.Port)
			} else {
				peer.Port = uint16(*rp.Port)
			}
		}
		if rp.PasswordFile != "" && strings.TrimSpace(rp.PasswordFile) == "" {
			v.fail(p+".password_file", "is blank: name the file holding the TCP MD5 password, or leave it out")
		}
		peer.HoldTime, peer.Keepalive = v.bgpTimers(p, rp.HoldTime, rp.Keepalive, hold, keep)
		b.Peers = append(b.Peers, peer)
	}
	return b
}

// routerID validates bgp.router_id, which only a single node may set;
// left unset, every node's cluster address must be IPv4 to serve as its
// identifier. It returns the zero Addr when each node uses its own.
func (v *validator) routerID(s string, c *Cluster) netip.Addr {
	if s == "" {
		if c != nil {
			for i, n := range c.Nodes {
				if n.Address.IsValid() && !n.Address.Unmap().Is4() {
					v.fail(fmt.Sprintf("cluster.nodes[%d].address", i), "%s is IPv6, so it cannot be node %q's BGP router id: give nodes IPv4 addresses or set bgp.router_id on a single node", n.Address, n.Name)
				}
			}
		}
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || !a.Is4():
		v.fail("bgp.router_id", "%q is not an IPv4 address (BGP identifiers are 32 bits)", s)
	case c != nil && len(c.Nodes) > 1:
		v.fail("bgp.router_id", "every node would use %s, but routers need a distinct identifier per peer: leave router_id unset so each node uses its own cluster address", a)
	default:
		return a
	}
	return netip.Addr{}
}

// peerAddress parses a BGP peer's address, which must be one router's.
// It returns the zero Addr if it is not.
func (v *validator) peerAddress(path, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	switch {
	case s == "":
		v.fail(path, "the router's address is required")
		return netip.Addr{}
	case err != nil:
		v.fail(path, "%q is not an IP address (host names are not resolved)", s)
		return netip.Addr{}
	case CheckHostAddress(a) != nil:
		v.fail(path, "%s: %v: a peer is one router", a, CheckHostAddress(a))
		return netip.Addr{}
	}
	return a.Unmap()
}

// notANode refuses a peer address that is one of the cluster's nodes: a
// node cannot be its own router.
func (v *validator) notANode(path string, a netip.Addr, c *Cluster) {
	if c == nil {
		return
	}
	for _, n := range c.Nodes {
		if n.Address.Unmap() == a {
			v.fail(path, "%s is node %q's own address", a, n.Name)
		}
	}
}

// bgpTimers validates a hold time and keepalive at path. The keepalive
// defaults to a third of the hold time, as RFC 4271 suggests, unless the
// level above set one (defKeep).
func (v *validator) bgpTimers(path, rawHold, rawKeep string, defHold, defKeep time.Duration) (hold, keep time.Duration) {
	hold = v.duration(path+".hold_time", rawHold, defHold, 0)
	switch {
	case hold%time.Second != 0:
		v.fail(path+".hold_time", "%s: BGP counts in whole seconds", hold)
	case hold < 3*time.Second || hold > 65535*time.Second:
		v.fail(path+".hold_time", "%s: want 3s to 65535s (0 would turn keepalives off, which halb does not allow: a hung node would never be withdrawn)", hold)
	}
	keep = defKeep
	if rawHold != "" || keep == 0 {
		keep = max(hold/3/time.Second*time.Second, time.Second)
	}
	keep = v.duration(path+".keepalive", rawKeep, keep, 0)
	switch {
	case keep%time.Second != 0:
		v.fail(path+".keepalive", "%s: BGP counts in whole seconds", keep)
	case keep < time.Second:
		v.fail(path+".keepalive", "%s: at least 1s", keep)
	case keep >= hold:
		v.fail(path+".keepalive", "%s is not shorter than hold_time %s: the session would expire between keepalives (use a third of it)", keep, hold)
	}
	return hold, keep
}

// asn checks a 32-bit AS number, refusing the reserved ones a router
// would refuse too.
func (v *validator) asn(path string, n int64) uint32 {
	switch {
	case n < 1 || n > 4294967294:
		v.fail(path, "%d: want 1-4294967294 (private: 64512-65534, 4200000000-4294967294)", n)
	case n == 23456:
		v.fail(path, "23456 is AS_TRANS, reserved for 2-byte ASN compatibility")
	case n == 65535:
		v.fail(path, "65535 is reserved")
	default:
		return uint32(n)
	}
	return 0
}

// Well-known communities (RFC 1997, RFC 8326) accepted by name.
var wellKnownCommunities = map[string]uint32{
	"no-export":         0xFFFFFF01,
	"no-advertise":      0xFFFFFF02,
	"no-export-subconf": 0xFFFFFF03,
	"local-as":          0xFFFFFF03,
	"graceful-shutdown": 0xFFFF0000,
}

// ParseCommunity reads a standard community: ASN:VALUE, each 0-65535, or
// a well-known name such as no-export.
func ParseCommunity(s string) (uint32, error) {
	if c, ok := wellKnownCommunities[s]; ok {
		return c, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q is not ASN:VALUE (e.g. 64512:100) or a well-known name (no-export, no-advertise, local-as, graceful-shutdown)", s)
	}
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if errA != nil || errB != nil {
		return 0, fmt.Errorf("%q: both halves of ASN:VALUE must be 0-65535 (32-bit ASNs need large communities, which halb does not send)", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// announce reads each VIP's announcement settings, after v.vips and
// v.bgp have checked the rest.
func (v *validator) announce(raws []rawVIP, cfg *Config) {
	for i, r := range raws {
		if i >= len(cfg.VIPs) {
			break
		}
		vip := &cfg.VIPs[i]
		p := fmt.Sprintf("vips[%d]", i)
		switch Announce(r.Announce) {
		case "", AnnounceARP:
			vip.Announce = AnnounceARP
		case AnnounceBGP:
			vip.Announce = AnnounceBGP
		default:
			v.fail(p+".announce", "%q: want arp or bgp", r.Announce)
			continue
		}
		if vip.Announce == AnnounceARP {
			for _, f := range []struct {
				name string
				set  bool
			}{{"communities", len(r.Communities) > 0}, {"local_pref", r.LocalPref != nil}, {"med", r.MED != nil}, {"prefer", r.Prefer != ""}} {
				if f.set {
					v.fail(p+"."+f.name, "only announce: bgp uses %s (this VIP is announced by ARP)", f.name)
				}
			}
			continue
		}
		if cfg.BGP == nil {
			v.fail(p+".announce", "bgp needs a bgp section (local_asn and peers)")
		}
		if vip.Address.IsValid() && !vip.Address.IsSingleIP() {
			v.fail(p+".address", "%s: announce: bgp announces the VIP as a host route; write %s or %s", vip.Address, vip.Address.Addr(), netip.PrefixFrom(vip.Address.Addr(), vip.Address.Addr().BitLen()))
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"garp_count", r.GARPCount != nil}, {"garp_interval", r.GARPInterval != ""}, {"garp_refresh", r.GARPRefresh != ""}} {
			if f.set {
				v.fail(p+"."+f.name, "announce: bgp sends no gratuitous ARP: remove %s", f.name)
			}
		}
		if vip.Interface == "" {
			vip.Interface = DefaultBGPInterface
		}
		for j, s := range r.Communities {
			c, err := ParseCommunity(s)
			if err != nil {
				v.fail(fmt.Sprintf("%s.communities[%d]", p, j), "%v", err)
				continue
			}
			vip.Communities = append(vip.Communities, c)
		}
		vip.LocalPref = v.u32(p+".local_pref", r.LocalPref)
		vip.MED = v.u32(p+".med", r.MED)
		if r.Prefer != "" {
			vip.Prefer = r.Prefer
			if cfg.Cluster != nil {
				if _, ok := cfg.Cluster.Node(r.Prefer); !ok {
					v.fail(p+".prefer", "no node named %q in cluster.nodes", r.Prefer)
				}
			}
		}
	}
}

func (v *validator) u32(path string, n *int64) *uint32 {
	if n == nil {
		return nil
	}
	if *n < 0 || *n > 4294967295 {
		v.fail(path, "%d: want 0-4294967295", *n)
		return nil
	}
	u := uint32(*n)
	return &u
}
