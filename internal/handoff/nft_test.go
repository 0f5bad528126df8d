package handoff

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestForwardScript(t *testing.T) {
	r := ForwardRules{Iface: "eth0", VIP: vip, Self: macC, Peer: macA, Timeout: 92 * time.Second,
		Local: []Flow{{Client: netip.MustParseAddrPort("10.0.0.7:40000"), Port: 6443}}}
	got := r.Script()
	for _, want := range []string{
		"delete table netdev halb_ho_fwd_192_168_66_160\n",
		"type ipv4_addr . inet_service . inet_service",
		"timeout 92s",
		"elements = { 10.0.0.7 . 40000 . 6443 }",
		`hook ingress device "eth0"`,
		"tcp flags & (syn|ack) == syn update @local { ip saddr . tcp sport . tcp dport }",
		`ip saddr . tcp sport . tcp dport != @local counter ether saddr set 02:00:00:00:00:0c ether daddr set 02:00:00:00:00:0a fwd to "eth0"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("script lacks %q:\n%s", want, got)
		}
	}
	r.VIP = netip.MustParseAddr("fd00::160")
	if got := r.Script(); !strings.Contains(got, "ip6 saddr . tcp sport . tcp dport != @local") || !strings.Contains(got, "ipv6_addr") {
		t.Errorf("IPv6 script:\n%s", got)
	}
}

func TestQuietScript(t *testing.T) {
	if got := QuietScript(vip, netip.MustParseAddr("192.168.66.151")); !strings.Contains(got, "arp saddr ip 192.168.66.160 arp saddr ip set 192.168.66.151") ||
		!strings.Contains(got, "arp operation request arp daddr ip 192.168.66.160 drop") {
		t.Errorf("quiet script:\n%s", got)
	}
	if got := QuietScript(vip, netip.Addr{}); !strings.Contains(got, "arp saddr ip 192.168.66.160 drop") {
		t.Errorf("quiet script without a primary address:\n%s", got)
	}
}

func TestQuietScriptIPv6(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::160")
	if QuietFamily(v6) != "ip6" || QuietTable(v6) != "halb_ho_nd_fd00__160" || QuietFamily(vip) != "arp" {
		t.Fatalf("quiet table: %s %s, IPv4 family %s", QuietFamily(v6), QuietTable(v6), QuietFamily(vip))
	}
	target := "@th,64,128 0xfd000000000000000000000000000160"
	got := QuietScript(v6, netip.MustParseAddr("fe80::1"))
	for _, want := range []string{
		"delete table ip6 halb_ho_nd_fd00__160\n",
		"icmpv6 type nd-neighbor-solicit " + target + " counter drop",
		"icmpv6 type nd-neighbor-advert " + target + " drop",
		"icmpv6 type nd-neighbor-solicit ip6 saddr fd00::160 ip6 saddr set fe80::1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("IPv6 quiet script lacks %q:\n%s", want, got)
		}
	}
	if got := QuietScript(v6, netip.MustParseAddr("192.168.66.151")); !strings.Contains(got, "icmpv6 type nd-neighbor-solicit ip6 saddr fd00::160 drop") {
		t.Errorf("IPv6 quiet script with no IPv6 primary address must drop its own solicitations from the VIP:\n%s", got)
	}
	if got, want := DeleteQuietScript(v6), "table ip6 halb_ho_nd_fd00__160 {}\ndelete table ip6 halb_ho_nd_fd00__160\n"; got != want {
		t.Errorf("DeleteQuietScript = %q, want %q", got, want)
	}
}

func TestParseTables(t *testing.T) {
	out := "table inet filter\ntable netdev halb_ho_fwd_10_0_0_1\n\ntable arp halb_ho_arp_10_0_0_1\n"
	want := []Table{{"inet", "filter"}, {"netdev", "halb_ho_fwd_10_0_0_1"}, {"arp", "halb_ho_arp_10_0_0_1"}}
	if diff := cmp.Diff(want, ParseTables([]byte(out))); diff != "" {
		t.Fatalf("tables (-want +got):\n%s", diff)
	}
}

// nsNFT runs nft inside a network namespace the test made.
type nsNFT struct{ ns string }

func (n nsNFT) run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, "nft"}, args...)...)
	c.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("nft %v: %w: %s", args, err, stderr.String())
	}
	return out, nil
}

func (n nsNFT) Apply(ctx context.Context, script string) error {
	_, err := n.run(ctx, script, "-f", "-")
	return err
}

func (n nsNFT) Tables(ctx context.Context) ([]Table, error) {
	out, err := n.run(ctx, "", "list", "tables")
	return ParseTables(out), err
}

// TestScriptsApplyAndCleanup loads both scripts into a fresh namespace's
// kernel, twice (the replace must be idempotent), and checks that Cleanup
// removes them and only them.
func TestScriptsApplyAndCleanup(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("HALB_REQUIRE_NETNS") != "" {
			t.Fatal("HALB_REQUIRE_NETNS is set but the test does not run as root")
		}
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("hoT%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1").CombinedOutput(); err != nil {
		t.Fatalf("add veth: %v: %s", err, out)
	}
	ctx := t.Context()
	r := nsNFT{ns: ns}
	if err := r.Apply(ctx, "table inet keepme {}\n"); err != nil {
		t.Fatal(err)
	}
	fwd := ForwardRules{Iface: "eth0", VIP: vip, Self: macC, Peer: macA, Timeout: time.Minute,
		Local: []Flow{{Client: netip.MustParseAddrPort("10.0.0.7:40000"), Port: 6443}}}
	for range 2 {
		for _, s := range []string{fwd.Script(), QuietScript(vip, netip.MustParseAddr("192.168.66.151"))} {
			if err := r.Apply(ctx, s); err != nil {
				t.Fatalf("apply:\n%s\n%v", s, err)
			}
		}
	}
	ts, err := r.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Table{{"inet", "keepme"}, {"netdev", ForwardTable(vip)}, {"arp", QuietTable(vip)}}
	if diff := cmp.Diff(want, ts); diff != "" {
		t.Fatalf("tables after apply (-want +got):\n%s", diff)
	}
	n, err := Cleanup(ctx, r)
	if err != nil || n != 2 {
		t.Fatalf("Cleanup = %d, %v; want 2 tables removed", n, err)
	}
	ts, _ = r.Tables(ctx)
	if diff := cmp.Diff([]Table{{"inet", "keepme"}}, ts); diff != "" {
		t.Fatalf("tables after cleanup (-want +got):\n%s", diff)
	}
	if err := r.Apply(ctx, DeleteScript("netdev", ForwardTable(vip))); err != nil {
		t.Fatalf("deleting an absent table must succeed: %v", err)
	}
}
