package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ip runs `ip -n <ns of host> args...`.
func (l *Lab) ip(ctx context.Context, host string, args ...string) ([]byte, error) {
	return run(ctx, "ip", append([]string{"-n", l.NS(host)}, args...)...)
}

// buildNet makes the switch namespace with bridge br0 and, for every host,
// a namespace whose eth0 is a veth whose peer is created directly in the
// switch namespace — nothing is ever created in the caller's namespace.
func (l *Lab) buildNet(ctx context.Context) error {
	steps := [][]string{
		{"netns", "add", l.NS("sw")},
		{"-n", l.NS("sw"), "link", "set", "lo", "up"},
		{"-n", l.NS("sw"), "link", "add", "br0", "type", "bridge"},
		{"-n", l.NS("sw"), "link", "set", "br0", "up"},
	}
	type host struct {
		name string
		addr netip.Addr
	}
	var hosts []host
	if !l.opts.Router { // the router puts the client on a segment of its own
		hosts = append(hosts, host{"cl", clientIP})
	}
	for i, n := range l.LBNames() {
		hosts = append(hosts, host{n, LBAddr(i + 1)})
	}
	for i, n := range l.CPNames() {
		hosts = append(hosts, host{n, CPAddr(i + 1)})
	}
	for _, h := range hosts {
		ns := l.NS(h.name)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", h.name, "netns", l.NS("sw")},
			[]string{"-n", l.NS("sw"), "link", "set", h.name, "master", "br0"},
			[]string{"-n", l.NS("sw"), "link", "set", h.name, "up"},
			[]string{"-n", ns, "addr", "add", netip.PrefixFrom(h.addr, subnet.Bits()).String(), "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("build lab network: %w", err)
		}
	}
	if err := l.plainSwitch(ctx); err != nil {
		return err
	}
	if l.opts.Router {
		return l.buildRouterNet(ctx)
	}
	return nil
}

// plainSwitch keeps the switch's frames out of netfilter. With
// br_netfilter loaded (Docker and Kubernetes hosts load it) every frame a
// Linux bridge forwards also runs the IP firewall hooks of the bridge's
// namespace by default: work a hardware switch does not do, which the
// lab's hosts would pay for in CPU under a storm of connections.
func (l *Lab) plainSwitch(ctx context.Context) error {
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		return nil // no br_netfilter: nothing to turn off
	}
	_, err := run(ctx, "ip", "netns", "exec", l.NS("sw"), "sysctl", "-q", "-w",
		"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	if err != nil {
		return fmt.Errorf("build lab network: keep the switch out of netfilter: %w", err)
	}
	return nil
}

type ipAddr struct {
	AddrInfo []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
	} `json:"addr_info"`
}

// hasVIP reports whether host has the VIP on eth0.
func (l *Lab) hasVIP(ctx context.Context, host string) (bool, error) {
	out, err := l.ip(ctx, host, "-j", "addr", "show", "dev", "eth0")
	if err != nil {
		return false, err
	}
	var links []ipAddr
	if err := json.Unmarshal(out, &links); err != nil {
		return false, fmt.Errorf("parse addresses of %s: %w", host, err)
	}
	for _, ln := range links {
		for _, a := range ln.AddrInfo {
			if a.Local == VIP().String() {
				return true, nil
			}
		}
	}
	return false, nil
}

// Holder lists the LB nodes that have the VIP on eth0 right now, in name
// order. It reads the kernel, not halb, so it also shows a VIP left behind by
// a killed process until its lifetime runs out.
func (l *Lab) Holder(ctx context.Context) ([]string, error) {
	var hs []string
	for _, lb := range l.LBNames() {
		ok, err := l.hasVIP(ctx, lb)
		if err != nil {
			return nil, err
		}
		if ok {
			hs = append(hs, lb)
		}
	}
	return hs, nil
}

// WaitHolder polls Holder until pred accepts it or timeout passes, and
// returns the last holders seen.
func (l *Lab) WaitHolder(ctx context.Context, timeout time.Duration, pred func(holders []string) bool) ([]string, error) {
	var last []string
	err := poll(ctx, timeout, func() (bool, error) {
		h, err := l.Holder(ctx)
		if err != nil {
			return false, err
		}
		last = h
		return pred(h), nil
	})
	if err != nil {
		return last, fmt.Errorf("wait for VIP holders (last seen %v): %w", last, err)
	}
	return last, nil
}

// ExactlyOne returns a WaitHolder predicate: exactly one node among
// among (all LB nodes if empty) holds the VIP. Nodes outside among are ignored,
// so a killed or cut-off node's leftover VIP does not count.
func ExactlyOne(among ...string) func([]string) bool {
	return func(h []string) bool {
		n := 0
		for _, x := range h {
			if len(among) == 0 || slices.Contains(among, x) {
				n++
			}
		}
		return n == 1
	}
}

// Only returns a WaitHolder predicate: the holders are exactly nodes.
func Only(nodes ...string) func([]string) bool {
	return func(h []string) bool { return slices.Equal(h, nodes) }
}

// LinkDown sets the switch side of host's veth down, cutting host off the LAN.
func (l *Lab) LinkDown(ctx context.Context, host string) error {
	_, err := l.ip(ctx, "sw", "link", "set", host, "down")
	return err
}

// LinkUp undoes LinkDown.
func (l *Lab) LinkUp(ctx context.Context, host string) error {
	_, err := l.ip(ctx, "sw", "link", "set", host, "up")
	return err
}

// addr returns the address of lbN, cpN or cl.
func addrOf(host string) (netip.Addr, error) {
	if host == "cl" {
		return clientIP, nil
	}
	if len(host) == 3 {
		n, err := strconv.Atoi(host[2:])
		if err == nil && n >= 1 {
			switch host[:2] {
			case "lb":
				return LBAddr(n), nil
			case "cp":
				return CPAddr(n), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("unknown lab host %q", host)
}

// route adds or deletes a prohibit route in host's namespace for dst: the
// kernel then refuses to send there (EACCES locally, ICMP to forwarded
// traffic), which needs nothing beyond iproute2.
func (l *Lab) route(ctx context.Context, op, host, dst string) error {
	a, err := addrOf(dst)
	if err != nil {
		return err
	}
	_, err = l.ip(ctx, host, "route", op, "prohibit", a.String()+"/32")
	if op == "del" && err != nil && strings.Contains(err.Error(), "No such process") {
		return nil // already healed
	}
	return err
}

// Partition stops a and b from reaching each other, in both directions.
func (l *Lab) Partition(ctx context.Context, a, b string) error {
	if err := l.route(ctx, "add", a, b); err != nil {
		return fmt.Errorf("partition %s from %s: %w", a, b, err)
	}
	if err := l.route(ctx, "add", b, a); err != nil {
		return fmt.Errorf("partition %s from %s: %w", b, a, err)
	}
	return nil
}

// Heal undoes Partition.
func (l *Lab) Heal(ctx context.Context, a, b string) error {
	if err := l.route(ctx, "del", a, b); err != nil {
		return fmt.Errorf("heal %s and %s: %w", a, b, err)
	}
	if err := l.route(ctx, "del", b, a); err != nil {
		return fmt.Errorf("heal %s and %s: %w", b, a, err)
	}
	return nil
}

// IsolateCPs stops lb from reaching any control plane; the rest of the LAN
// (other LB nodes, the client) still reaches it.
func (l *Lab) IsolateCPs(ctx context.Context, lb string) error {
	for _, cp := range l.CPNames() {
		if err := l.route(ctx, "add", lb, cp); err != nil {
			return fmt.Errorf("isolate %s from %s: %w", lb, cp, err)
		}
	}
	return nil
}

// RestoreCPs undoes IsolateCPs.
func (l *Lab) RestoreCPs(ctx context.Context, lb string) error {
	for _, cp := range l.CPNames() {
		if err := l.route(ctx, "del", lb, cp); err != nil {
			return fmt.Errorf("restore %s to %s: %w", lb, cp, err)
		}
	}
	return nil
}

// MAC returns the hardware address of host's eth0.
func (l *Lab) MAC(ctx context.Context, host string) (string, error) {
	out, err := l.ip(ctx, host, "-j", "link", "show", "dev", "eth0")
	if err != nil {
		return "", err
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return "", fmt.Errorf("parse link of %s: %v", host, err)
	}
	return links[0].Address, nil
}

// Neigh is one entry of the client's neighbour table.
type Neigh struct {
	MAC   string   // "" when incomplete or failed
	State []string // e.g. [REACHABLE], [STALE]
}

// ClientNeigh returns the client's neighbour entry for ip; a zero Neigh
// when there is none.
func (l *Lab) ClientNeigh(ctx context.Context, ip netip.Addr) (Neigh, error) {
	out, err := l.ip(ctx, "cl", "-j", "neigh", "show", ip.String(), "dev", "eth0")
	if err != nil {
		return Neigh{}, err
	}
	var es []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return Neigh{}, nil
	}
	if err := json.Unmarshal(out, &es); err != nil {
		return Neigh{}, fmt.Errorf("parse client neighbours: %w", err)
	}
	if len(es) == 0 {
		return Neigh{}, nil
	}
	return Neigh{MAC: es[0].LLAddr, State: es[0].State}, nil
}
