package handoff

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// Prefix starts the name of every nftables table halb makes, so a
// restarted halb removes what a crashed one left (Cleanup) and nothing
// else.
const Prefix = "halb_ho_"

// localSetSize bounds the new holder's set of its own connections
// learned during a hand-off; a connection past it is forwarded like an
// old one, and the old holder resets it.
const localSetSize = 262144

// ForwardRules are the new holder's forwarding for one VIP.
type ForwardRules struct {
	Iface string
	VIP   netip.Addr
	Self  net.HardwareAddr // this node's address on Iface: the frames' new source
	Peer  net.HardwareAddr // the old holder's
	// Local are this node's own client connections through the VIP,
	// which stay here; connections that start (SYN) while forwarding are
	// learned by the rule itself.
	Local []Flow
	// Timeout is how long a learned connection stays in the set; longer
	// than the forwarding lives.
	Timeout time.Duration
}

// Flow names a client connection to the VIP: the VIP's port is part of
// it, because a client reuses a source port towards another destination
// port (Linux does so freely), and keying on the client alone would take
// a connection the old holder serves for one the new holder started.
type Flow struct {
	Client netip.AddrPort
	Port   uint16 // the VIP's
}

// ForwardTable names the forwarding table of vip.
func ForwardTable(vip netip.Addr) string { return Prefix + "fwd_" + tableID(vip) }

// QuietTable names the old holder's table that keeps it from answering for
// vip: ARP for IPv4, neighbour discovery for IPv6.
func QuietTable(vip netip.Addr) string {
	if is6(vip) {
		return Prefix + "nd_" + tableID(vip)
	}
	return Prefix + "arp_" + tableID(vip)
}

// QuietFamily is the nftables family of QuietTable(vip).
func QuietFamily(vip netip.Addr) string {
	if is6(vip) {
		return "ip6"
	}
	return "arp"
}

// DeleteQuietScript renders the script removing vip's quiet table.
func DeleteQuietScript(vip netip.Addr) string {
	return DeleteScript(QuietFamily(vip), QuietTable(vip))
}

func is6(a netip.Addr) bool { return a.Unmap().Is6() }

func tableID(vip netip.Addr) string {
	return strings.NewReplacer(".", "_", ":", "_").Replace(vip.Unmap().String())
}

// Script renders the nft script that replaces the forwarding table: a
// netdev ingress chain on the VIP's interface that learns every
// connection starting here (a SYN without ACK), and sends every other
// TCP segment to the VIP — connections of the old holder, including
// handshakes and requests in flight at the move — back out of the same
// interface to the old holder's hardware address. The frames' source is
// rewritten too, or the switch would learn the clients' addresses on this
// node's port.
func (r ForwardRules) Script() string {
	fam, typ := "ip", "ipv4_addr"
	if r.VIP.Is6() {
		fam, typ = "ip6", "ipv6_addr"
	}
	name := ForwardTable(r.VIP)
	var b strings.Builder
	// Add-delete-define in one transaction replaces the table atomically.
	b.WriteString(DeleteScript("netdev", name))
	fmt.Fprintf(&b, "table netdev %s {\n", name)
	fmt.Fprintf(&b, "\tset local {\n\t\ttype %s . inet_service . inet_service\n\t\tflags dynamic,timeout\n\t\ttimeout %ds\n\t\tsize %d\n",
		typ, int(r.Timeout.Seconds()), localSetSize)
	if len(r.Local) > 0 {
		els := make([]string, len(r.Local))
		for i, c := range r.Local {
			els[i] = fmt.Sprintf("%s . %d . %d", c.Client.Addr().Unmap(), c.Client.Port(), c.Port)
		}
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(els, ", "))
	}
	b.WriteString("\t}\n")
	fmt.Fprintf(&b, "\tchain ingress {\n\t\ttype filter hook ingress device %q priority -100; policy accept;\n", r.Iface)
	fmt.Fprintf(&b, "\t\tmeta protocol %s %s daddr %s tcp flags & (syn|ack) == syn update @local { %s saddr . tcp sport . tcp dport }\n",
		fam, fam, r.VIP.Unmap(), fam)
	fmt.Fprintf(&b, "\t\tmeta protocol %s %s daddr %s meta l4proto tcp %s saddr . tcp sport . tcp dport != @local counter ether saddr set %s ether daddr set %s fwd to %q\n",
		fam, fam, r.VIP.Unmap(), fam, r.Self, r.Peer, r.Iface)
	b.WriteString("\t}\n}\n")
	return b.String()
}

// QuietScript renders the nft script that keeps the old holder from
// answering for vip while it keeps the address. Linux answers for any local
// address by default (arp_ignore=0; and neighbour solicitations always), so
// requests for the VIP are dropped on input. Its own requests must not name
// the VIP as sender either, or they would point the neighbours back at this
// node; but it still has to resolve its clients (its replies come from the
// VIP, and Linux takes the sender address from the packet waiting), so such
// requests get the interface's own address, primary, instead; without one
// they are dropped. For IPv6 primary may be the link-local address.
func QuietScript(vip, primary netip.Addr) string {
	in, out := quietARP(vip.Unmap(), primary)
	if is6(vip) {
		in, out = quietND(vip, primary)
	}
	fam, name := QuietFamily(vip), QuietTable(vip)
	var b strings.Builder
	// Add-delete-define in one transaction replaces the table atomically.
	b.WriteString(DeleteScript(fam, name))
	fmt.Fprintf(&b, "table %s %s {\n", fam, name)
	for _, c := range []struct {
		name, hook string
		rules      []string
	}{{"in", "input", in}, {"out", "output", out}} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority -100; policy accept;\n", c.name, c.hook)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// quietARP is QuietScript's rules for an IPv4 VIP.
func quietARP(vip, primary netip.Addr) (in, out []string) {
	in = []string{fmt.Sprintf("arp operation request arp daddr ip %s drop", vip)}
	if primary.Is4() && primary != vip {
		return in, []string{fmt.Sprintf("arp saddr ip %s arp saddr ip set %s", vip, primary)}
	}
	return in, []string{fmt.Sprintf("arp saddr ip %s drop", vip)}
}

// quietND is QuietScript's rules for an IPv6 VIP: neighbour solicitations
// for the VIP are dropped on input, advertisements for it on output (Linux
// may send one unsolicited), and the node's own solicitations get primary
// as their source; nf_tables fixes the ICMPv6 checksum, which covers the
// source. The target address is matched as raw payload (bytes 8 to 23 of
// the ICMPv6 header): nft 1.0.6, Debian 12's, has no name for it.
func quietND(vip, primary netip.Addr) (in, out []string) {
	target := fmt.Sprintf("@th,64,128 0x%x", vip.As16())
	in = []string{"icmpv6 type nd-neighbor-solicit " + target + " counter drop"}
	out = []string{"icmpv6 type nd-neighbor-advert " + target + " drop"}
	if primary.Is6() && !primary.Is4In6() && primary != vip {
		return in, append(out, fmt.Sprintf("icmpv6 type nd-neighbor-solicit ip6 saddr %s ip6 saddr set %s", vip, primary))
	}
	return in, append(out, fmt.Sprintf("icmpv6 type nd-neighbor-solicit ip6 saddr %s drop", vip))
}

// DeleteScript renders the script removing a table if it exists.
func DeleteScript(family, name string) string {
	return fmt.Sprintf("table %s %s {}\ndelete table %s %s\n", family, name, family, name)
}

// Runner applies nft scripts and lists tables.
type Runner interface {
	Apply(ctx context.Context, script string) error
	Tables(ctx context.Context) ([]Table, error)
}

// Table is one nftables table.
type Table struct{ Family, Name string }

// NFT runs the nft command. Its zero value looks nft up in PATH.
type NFT struct {
	Path string
}

// nftTimeout bounds one nft run: a transaction takes milliseconds.
const nftTimeout = 5 * time.Second

func (n NFT) cmd(ctx context.Context, args ...string) *exec.Cmd {
	path := n.Path
	if path == "" {
		path = "nft"
	}
	return exec.CommandContext(ctx, path, args...)
}

// Apply runs script as one nft transaction.
func (n NFT) Apply(ctx context.Context, script string) error {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	c := n.cmd(ctx, "-f", "-")
	c.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Tables lists every table.
func (n NFT) Tables(ctx context.Context) ([]Table, error) {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	c := n.cmd(ctx, "list", "tables")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return ParseTables(out), nil
}

// ParseTables reads `nft list tables` output: one "table FAMILY NAME"
// per line.
func ParseTables(out []byte) []Table {
	var ts []Table
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "table" {
			ts = append(ts, Table{Family: f[1], Name: f[2]})
		}
	}
	return ts
}

// Cleanup removes every table whose name starts with Prefix: what a halb
// that crashed mid-hand-off left behind. It returns how many it removed.
func Cleanup(ctx context.Context, r Runner) (int, error) {
	ts, err := r.Tables(ctx)
	if err != nil {
		return 0, err
	}
	var b strings.Builder
	n := 0
	for _, t := range ts {
		if strings.HasPrefix(t.Name, Prefix) {
			b.WriteString(DeleteScript(t.Family, t.Name))
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	if err := r.Apply(ctx, b.String()); err != nil {
		return 0, fmt.Errorf("remove stale hand-off tables: %w", err)
	}
	return n, nil
}
