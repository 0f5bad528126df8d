package haproxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Node is an LB host that will run halb, given on the command line.
type Node struct {
	Name     string
	Address  netip.Addr
	Priority *int // nil: halb's default
}

// ParseNode reads NAME=ADDRESS[:PRIORITY], e.g. lb1=192.168.66.151:200.
// An IPv6 address with a priority is written in brackets: lb1=[fd00::1]:200.
func ParseNode(s string) (Node, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return Node{}, fmt.Errorf("node %q: want NAME=ADDRESS[:PRIORITY], e.g. lb1=192.168.66.151", s)
	}
	n := Node{Name: name}
	if a, err := netip.ParseAddr(rest); err == nil {
		n.Address = a
		return n, nil
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return Node{}, fmt.Errorf("node %q: %q is not an IP address", s, rest)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(rest[:i], "["), "]")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return Node{}, fmt.Errorf("node %q: %q is not an IP address", s, host)
	}
	prio, err := strconv.Atoi(rest[i+1:])
	if err != nil || prio < 0 || prio > 1000 {
		return Node{}, fmt.Errorf("node %q: priority %q: want 0-1000", s, rest[i+1:])
	}
	n.Address = a
	n.Priority = &prio
	return n, nil
}
