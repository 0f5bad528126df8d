package cli

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"halb/internal/config"
)

// nodeEnv names this host's cluster.nodes entry when --node is not given;
// the packaged unit reads it from /etc/default/halb.
const nodeEnv = "HALB_NODE"

// chooseNode is pickNode with this host's environment, host name and
// interface addresses.
func chooseNode(flag string, c *config.Cluster) (string, error) {
	host, _ := os.Hostname() // only needed, and then checked, when nothing else decides
	var local []netip.Addr
	if c != nil && flag == "" && os.Getenv(nodeEnv) == "" {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return "", fmt.Errorf("choose this node: list local addresses: %w (pass --node NAME)", err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				local = append(local, p.Addr())
			}
		}
	}
	return pickNode(flag, os.Getenv(nodeEnv), local, host, c)
}

// pickNode decides which cluster.nodes entry this host is: --node, else
// $HALB_NODE, else the one entry whose address is on this host, else the
// entry named like the host (its full or short host name). Without a cluster
// section the name is only a label, and the host name serves. A name given
// by flag or environment is not checked here: the daemon refuses one that
// is not in cluster.nodes, naming the entries.
func pickNode(flag, env string, local []netip.Addr, hostname string, c *config.Cluster) (string, error) {
	switch {
	case flag != "":
		return flag, nil
	case env != "":
		return env, nil
	case c == nil:
		if hostname == "" {
			return "", fmt.Errorf("choose this node: no host name (pass --node NAME or set %s)", nodeEnv)
		}
		return hostname, nil
	}
	isLocal := make(map[netip.Addr]bool, len(local))
	for _, a := range local {
		isLocal[a.Unmap()] = true
	}
	var byAddr, names []string
	for _, n := range c.Nodes {
		names = append(names, n.Name)
		if isLocal[n.Address.Unmap()] {
			byAddr = append(byAddr, n.Name)
		}
	}
	if len(byAddr) == 1 {
		return byAddr[0], nil
	}
	// Several entries on this host (a test bed on one machine): the host
	// name may still tell them apart.
	candidates := names
	if len(byAddr) > 1 {
		candidates = byAddr
	}
	short, _, _ := strings.Cut(hostname, ".")
	for _, name := range candidates {
		if hostname != "" && (name == hostname || name == short) {
			return name, nil
		}
	}
	if len(byAddr) > 1 {
		return "", fmt.Errorf("choose this node: cluster.nodes %s all have addresses on this host: pass --node NAME or set %s",
			strings.Join(byAddr, ", "), nodeEnv)
	}
	return "", fmt.Errorf("choose this node: no entry of cluster.nodes (%s) has an address of this host or its host name %q: pass --node NAME or set %s",
		strings.Join(names, ", "), hostname, nodeEnv)
}
