package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"halb/test/fakecp"
)

// The routed topology (Options.Router): the client sits on its own
// segment behind a router namespace "rt" running FRR, and the router's
// other leg is on the LB segment (the bridge). LB nodes announce BGPVIP
// by BGP and the router spreads flows over them (ECMP).
//
//	cl 192.168.67.100 ── 192.168.67.1 rt 192.168.66.1 ── br0 ── lb1..lbN, cp1..cpN
var (
	routerLAN    = netip.MustParseAddr("192.168.66.1")
	routerClient = netip.MustParseAddr("192.168.67.1")
	routedClient = netip.MustParsePrefix("192.168.67.100/24")
	bgpVIP       = netip.MustParseAddr("192.168.70.160")
)

// ASNs of the routed lab: the LB nodes share one, as with one config file.
const (
	RouterASN = 64500
	LBASN     = 64512
)

// DefaultFRRDir is where Debian's frr package puts zebra and bgpd.
const DefaultFRRDir = "/usr/lib/frr"

// RouterAddr is the router's address on the LB segment: the LB nodes'
// BGP peer and default gateway.
func RouterAddr() netip.Addr { return routerLAN }

// RoutedClientAddr is the client's address in the routed topology.
func RoutedClientAddr() netip.Addr { return routedClient.Addr() }

// BGPVIP is the VIP the LB nodes announce in the routed topology; it is
// outside every lab segment, so only the BGP routes lead to it.
func BGPVIP() netip.Addr { return bgpVIP }

// frrDir holds the router's FRR configs, pid files, vty and zserv sockets.
func (l *Lab) frrDir() string { return filepath.Join(l.dir, "rt-frr") }

// buildRouterNet makes the router namespace with one leg on the bridge
// and one to the client, which gets its namespace here instead of on the
// bridge, and points every LB node's default route at the router.
func (l *Lab) buildRouterNet(ctx context.Context) error {
	rt, cl, sw := l.NS("rt"), l.NS("cl"), l.NS("sw")
	steps := [][]string{
		{"netns", "add", rt},
		{"-n", rt, "link", "set", "lo", "up"},
		{"-n", rt, "link", "add", "eth0", "type", "veth", "peer", "name", "rt", "netns", sw},
		{"-n", sw, "link", "set", "rt", "master", "br0"},
		{"-n", sw, "link", "set", "rt", "up"},
		{"-n", rt, "addr", "add", netip.PrefixFrom(routerLAN, subnet.Bits()).String(), "dev", "eth0"},
		{"-n", rt, "link", "set", "eth0", "up"},
		{"netns", "add", cl},
		{"-n", cl, "link", "set", "lo", "up"},
		{"-n", rt, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", cl},
		{"-n", rt, "addr", "add", netip.PrefixFrom(routerClient, routedClient.Bits()).String(), "dev", "eth1"},
		{"-n", rt, "link", "set", "eth1", "up"},
		{"-n", cl, "addr", "add", routedClient.String(), "dev", "eth0"},
		{"-n", cl, "link", "set", "eth0", "up"},
		{"-n", cl, "route", "add", "default", "via", routerClient.String()},
	}
	for _, lb := range l.LBNames() {
		steps = append(steps, []string{"-n", l.NS(lb), "route", "add", "default", "via", routerLAN.String()})
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("build the lab's router: %w", err)
		}
	}
	// Forward between the legs, and hash flows on their ports too: with
	// the default (addresses only) every connection of the one client
	// would take the same path.
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"} {
		if _, err := run(ctx, "ip", "netns", "exec", rt, "sysctl", "-qw", kv); err != nil {
			return fmt.Errorf("configure the lab's router: %w", err)
		}
	}
	if l.opts.PinFlows {
		return l.pinFlows(ctx)
	}
	return nil
}

// pinFlows makes the router remember, per connection to BGPVIP, the LB
// node its first packet went to (conntrack mark), and route the rest of
// the connection there by that mark, whatever the ECMP route becomes:
// what "flow pinning" / a stateful load-balancing router does. A node
// that withdraws then keeps its open sessions until they end, and one
// that leaves moves no other node's flows.
func (l *Lab) pinFlows(ctx context.Context) error {
	rt := l.NS("rt")
	var rules strings.Builder
	fmt.Fprintf(&rules, "table ip halbpin {\n chain pin_forward {\n  type filter hook forward priority 0; policy accept;\n")
	for i := range l.LBNames() {
		fmt.Fprintf(&rules, "  ip daddr %s ct state new rt ip nexthop %s ct mark set %d\n", bgpVIP, LBAddr(i+1), i+1)
	}
	fmt.Fprintf(&rules, " }\n chain pin_prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n"+
		"  ip daddr %s ct mark != 0 meta mark set ct mark\n }\n}\n", bgpVIP)
	path := filepath.Join(l.dir, "rt-pin.nft")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		return fmt.Errorf("write the router's flow pinning rules: %w", err)
	}
	if _, err := run(ctx, "ip", "netns", "exec", rt, "nft", "-f", path); err != nil {
		return fmt.Errorf("load the router's flow pinning rules: %w", err)
	}
	for i := range l.LBNames() {
		mark, table := strconv.Itoa(i+1), strconv.Itoa(100+i+1)
		for _, s := range [][]string{
			{"-n", rt, "route", "add", netip.PrefixFrom(bgpVIP, 32).String(), "via", LBAddr(i + 1).String(), "dev", "eth0", "table", table},
			{"-n", rt, "rule", "add", "fwmark", mark, "table", table, "priority", "100"},
		} {
			if _, err := run(ctx, "ip", s...); err != nil {
				return fmt.Errorf("pin the router's flows to lb%d: %w", i+1, err)
			}
		}
	}
	return nil
}

// bgpdConf is the router's BGP config: any LB node on the segment may
// dial in (halb only dials), and up to 16 equal paths are installed.
func (l *Lab) bgpdConf() string {
	return fmt.Sprintf(`! written by halb's lab (lab %[1]s)
frr defaults datacenter
hostname %[1]s-rt
log stdout informational
router bgp %[2]d
 bgp router-id %[3]s
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor LB peer-group
 neighbor LB remote-as %[4]d
 bgp listen range %[5]s peer-group LB
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
`, l.prefix, RouterASN, routerLAN, LBASN, subnet)
}

// startRouter starts zebra and bgpd in the router namespace and waits
// until bgpd answers on its vty socket. The daemons run as root with the
// frrvty group (FRR insists on it), with every path under the workdir.
func (l *Lab) startRouter(ctx context.Context) error {
	bin := l.opts.FRRDir
	if bin == "" {
		bin = DefaultFRRDir
	}
	for _, d := range []string{"zebra", "bgpd"} {
		if _, err := os.Stat(filepath.Join(bin, d)); err != nil {
			return fmt.Errorf("the lab's router needs FRR (apt-get install frr): %w", err)
		}
	}
	dir := l.frrDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make the router's FRR dir: %w", err)
	}
	files := map[string]string{
		"zebra.conf": fmt.Sprintf("hostname %s-rt\nlog stdout informational\n", l.prefix),
		"bgpd.conf":  l.bgpdConf(),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write the router's %s: %w", name, err)
		}
	}
	zserv := filepath.Join(dir, "zserv.api")
	common := func(daemon string) []string {
		return []string{"-u", "root", "-g", "frrvty", "-P", "0", "--log", "stdout",
			"-i", filepath.Join(dir, daemon+".pid"), "-z", zserv, "--vty_socket", dir,
			"-f", filepath.Join(dir, daemon+".conf")}
	}
	err := l.startReady(ctx, "rt-zebra", "rt", filepath.Join(bin, "zebra"), common("zebra"), func() bool {
		_, err := os.Stat(zserv)
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("start the router's zebra: %w", err)
	}
	err = l.startReady(ctx, "rt-bgpd", "rt", filepath.Join(bin, "bgpd"), common("bgpd"), func() bool {
		_, err := l.Vtysh(ctx, "show bgp summary json")
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("start the router's bgpd: %w", err)
	}
	l.log.Info("router up", "bgpd_conf", filepath.Join(dir, "bgpd.conf"))
	return nil
}

// Vtysh runs one vtysh command against the router's daemons and returns
// its output.
func (l *Lab) Vtysh(ctx context.Context, command string) (string, error) {
	out, err := run(ctx, "vtysh", "--vty_socket", l.frrDir(), "-c", command)
	return string(out), err
}

// AddBGPVIP puts BGPVIP on node's loopback, as halb does in BGP mode, so
// the node accepts the traffic the router sends it and answers no ARP.
func (l *Lab) AddBGPVIP(ctx context.Context, node string) error {
	_, err := l.ip(ctx, node, "addr", "replace", netip.PrefixFrom(bgpVIP, 32).String(), "dev", "lo")
	return err
}

// RouterNextHops returns the gateways of the router's kernel route to
// dst, sorted; none when there is no route. It reads the kernel, not FRR,
// so it shows what forwarding does, through nexthop objects too.
func (l *Lab) RouterNextHops(ctx context.Context, dst netip.Addr) ([]netip.Addr, error) {
	out, err := l.ip(ctx, "rt", "-j", "route", "show", "exact", netip.PrefixFrom(dst, dst.BitLen()).String())
	if err != nil {
		return nil, err
	}
	var routes []kernelRoute
	if len(strings.TrimSpace(string(out))) > 0 {
		if err := json.Unmarshal(out, &routes); err != nil {
			return nil, fmt.Errorf("parse the router's route to %s: %w", dst, err)
		}
	}
	var gws []netip.Addr
	for _, r := range routes {
		hops := r.Nexthops
		if r.Gateway != "" {
			hops = append(hops, kernelHop{Gateway: r.Gateway})
		}
		if len(hops) == 0 && r.NHID != 0 {
			if hops, err = l.nexthopGroup(ctx, r.NHID); err != nil {
				return nil, err
			}
		}
		for _, h := range hops {
			a, err := netip.ParseAddr(h.Gateway)
			if err != nil {
				return nil, fmt.Errorf("parse the router's gateway %q: %w", h.Gateway, err)
			}
			gws = append(gws, a)
		}
	}
	slices.SortFunc(gws, netip.Addr.Compare)
	return gws, nil
}

type kernelRoute struct {
	Gateway  string      `json:"gateway"`
	NHID     int         `json:"nhid"`
	Nexthops []kernelHop `json:"nexthops"`
}

type kernelHop struct {
	Gateway string `json:"gateway"`
}

// nexthopGroup resolves a kernel nexthop object to its gateways.
func (l *Lab) nexthopGroup(ctx context.Context, id int) ([]kernelHop, error) {
	out, err := l.ip(ctx, "rt", "-j", "nexthop", "show", "id", strconv.Itoa(id))
	if err != nil {
		return nil, err
	}
	var nhs []struct {
		Gateway string `json:"gateway"`
		Group   []struct {
			ID int `json:"id"`
		} `json:"group"`
	}
	if err := json.Unmarshal(out, &nhs); err != nil || len(nhs) != 1 {
		return nil, fmt.Errorf("parse the router's nexthop %d: %v", id, errors.Join(err, fmt.Errorf("%d objects", len(nhs))))
	}
	if nhs[0].Gateway != "" {
		return []kernelHop{{Gateway: nhs[0].Gateway}}, nil
	}
	var hops []kernelHop
	for _, m := range nhs[0].Group {
		h, err := l.nexthopGroup(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		hops = append(hops, h...)
	}
	return hops, nil
}

// WaitRouterNextHops polls RouterNextHops until it is want (sorted) or
// timeout passes, and returns how long that took.
func (l *Lab) WaitRouterNextHops(ctx context.Context, dst netip.Addr, want []netip.Addr, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	want = slices.Clone(want)
	slices.SortFunc(want, netip.Addr.Compare)
	var last []netip.Addr
	err := poll(ctx, timeout, func() (bool, error) {
		gws, err := l.RouterNextHops(ctx, dst)
		if err != nil {
			return false, err
		}
		last = gws
		return slices.Equal(gws, want), nil
	})
	if err != nil {
		return time.Since(start), fmt.Errorf("wait for the router's route to %s via %v (last seen %v): %w", dst, want, last, err)
	}
	return time.Since(start), nil
}

// StartVIPServer runs a fake control plane named node on BGPVIP in node's
// namespace (process "vip-<node>"), so a client's connections to the VIP
// show which node the router sent them to.
func (l *Lab) StartVIPServer(ctx context.Context, node string) error {
	if err := l.startFakeCP(ctx, "vip-"+node, node, node, bgpVIP); err != nil {
		return fmt.Errorf("start the VIP server of %s: %w", node, err)
	}
	return nil
}

// startFakeCP runs `halb-lab fakecp --name name` on addr in host's
// namespace as the lab process proc, with the lab's PKI and the VIP in its
// certificates, and waits until its control socket answers.
func (l *Lab) startFakeCP(ctx context.Context, proc, host, name string, addr netip.Addr) error {
	sock := filepath.Join(l.dir, proc+".sock")
	_ = os.Remove(sock)
	c := fakecp.NewClient(sock)
	args := []string{"fakecp", "--name", name, "--listen", addr.String(), "--san", VIP().String(), "--pki", l.PKIDir(), "--control", sock}
	if l.opts.Router {
		// Behind the router the client reaches the control plane through
		// halb on the BGP VIP, which the certificates must name too.
		args = append(args, "--san", bgpVIP.String())
	}
	return l.startReady(ctx, proc, host, l.opts.LabBin, args, func() bool {
		_, err := c.Status(ctx)
		return err == nil
	})
}

// startReady starts bin in host's namespace as the lab process name and
// waits up to 10 s for ready, failing early with its log if it exits.
func (l *Lab) startReady(ctx context.Context, name, host, bin string, args []string, ready func() bool) error {
	p, err := l.start(name, l.NS(host), bin, args...)
	if err != nil {
		return err
	}
	return poll(ctx, 10*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v; log:\n%s", name, p.err, l.LogTail(name, 20))
		}
		return ready(), nil
	})
}

// BGPMode returns an Options.Mutate that turns the lab's config into BGP
// mode: the frontends listen on BGPVIP, which every node announces to
// the router with hold time hold; a drain other than 0 replaces
// timeouts.drain, so open sessions can outlive a withdrawal.
func BGPMode(hold, drain time.Duration) func(node, text string) string {
	return func(_, text string) string {
		text = strings.ReplaceAll(text, "bind: "+VIP().String()+":", "bind: "+bgpVIP.String()+":")
		arp := fmt.Sprintf("vips:\n  - address: %s/%d\n    interface: eth0\n", VIP(), subnet.Bits())
		bgp := fmt.Sprintf("bgp:\n  local_asn: %d\n  hold_time: %s\n  peers:\n    - {address: %s, asn: %d}\n"+
			"vips:\n  - address: %s\n    announce: bgp\n", LBASN, hold, routerLAN, RouterASN, bgpVIP)
		text = strings.Replace(text, arp, bgp, 1)
		if drain > 0 {
			text = strings.Replace(text, "\n  drain: 2s\n", fmt.Sprintf("\n  drain: %s\n", drain), 1)
		}
		return text
	}
}

// RouterRoute is the router's kernel route to dst as `ip route` prints
// it, with the nexthop group it uses, for people to read.
func (l *Lab) RouterRoute(ctx context.Context, dst netip.Addr) string {
	out, err := l.ip(ctx, "rt", "route", "show", "exact", netip.PrefixFrom(dst, dst.BitLen()).String())
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(out))
}
