package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// gossipTable is the nftables table CountGossip adds to each LB node: it
// only counts, it never drops.
const gossipTable = "halbbench"

// CountGossip installs counters of the gossip traffic (TCP and UDP to or
// from port 7946, where memberlist and the shared connection table
// travel) in every LB node's namespace; NodeUsage reads them.
func (l *Lab) CountGossip(ctx context.Context) error {
	rules := fmt.Sprintf(`table inet %[1]s {
	counter gossip_in {}
	counter gossip_out {}
	chain in {
		type filter hook input priority 0; policy accept;
		meta l4proto { tcp, udp } th dport 7946 counter name gossip_in return
		meta l4proto { tcp, udp } th sport 7946 counter name gossip_in
	}
	chain out {
		type filter hook output priority 0; policy accept;
		meta l4proto { tcp, udp } th sport 7946 counter name gossip_out return
		meta l4proto { tcp, udp } th dport 7946 counter name gossip_out
	}
}
`, gossipTable)
	for _, lb := range l.LBNames() {
		if out, err := runStdin(ctx, rules, "ip", "netns", "exec", l.NS(lb), "nft", "-f", "-"); err != nil {
			return fmt.Errorf("count gossip on %s: %w: %s", lb, err, out)
		}
	}
	return nil
}

// NodeUsage is a reading of what halb on one LB node has used so far;
// two readings' Sub is the use over the window between them.
type NodeUsage struct {
	At             time.Time
	GossipInBytes  uint64 // IP bytes of gossip received (CountGossip)
	GossipOutBytes uint64 // IP bytes of gossip sent
	GossipInPkts   uint64
	GossipOutPkts  uint64
	CPU            time.Duration // user + system time of the halb process
}

// Sub is the use from earlier to u.
func (u NodeUsage) Sub(earlier NodeUsage) NodeUsage {
	return NodeUsage{
		At:             u.At,
		GossipInBytes:  u.GossipInBytes - earlier.GossipInBytes,
		GossipOutBytes: u.GossipOutBytes - earlier.GossipOutBytes,
		GossipInPkts:   u.GossipInPkts - earlier.GossipInPkts,
		GossipOutPkts:  u.GossipOutPkts - earlier.GossipOutPkts,
		CPU:            u.CPU - earlier.CPU,
	}
}

// NodeUsage reads node's gossip counters and its halb's CPU time.
func (l *Lab) NodeUsage(ctx context.Context, node string) (NodeUsage, error) {
	u := NodeUsage{At: time.Now()}
	pid := l.PID(node)
	if pid == 0 {
		return u, fmt.Errorf("halb on %s is not running", node)
	}
	cpu, err := procCPU(pid)
	if err != nil {
		return u, err
	}
	u.CPU = cpu
	out, _, err := l.Exec(ctx, node, "nft", "-j", "list", "counters", "table", "inet", gossipTable)
	if err != nil {
		return u, fmt.Errorf("read gossip counters on %s (CountGossip first): %w: %s", node, err, out)
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return u, fmt.Errorf("parse gossip counters on %s: %w", node, err)
	}
	for _, e := range doc.Nftables {
		switch c := e.Counter; {
		case c == nil:
		case c.Name == "gossip_in":
			u.GossipInBytes, u.GossipInPkts = c.Bytes, c.Packets
		case c.Name == "gossip_out":
			u.GossipOutBytes, u.GossipOutPkts = c.Bytes, c.Packets
		}
	}
	return u, nil
}

// userHZ is the unit of /proc/PID/stat's times: fixed at 100 by the
// kernel's ABI whatever the kernel's own tick rate.
const userHZ = 100

// procCPU is pid's user plus system time, all threads, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from its closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc stat %q: no command name", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat %q: %d fields after the name, want 13 or more", stat, len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat CPU time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// CPU is the user plus system time so far of a process the lab started
// (lb1, cp2, lb1-haproxy, ...), all its threads.
func (l *Lab) CPU(name string) (time.Duration, error) {
	pid := l.PID(name)
	if pid == 0 {
		return 0, fmt.Errorf("CPU time of %s: not running", name)
	}
	return procCPU(pid)
}
