package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"halb/internal/config"
)

// hostFacts is what `halb check --node` needs to know about this host:
// gathered from /proc and the interfaces by gatherHostFacts, judged by
// judgeHost, so the judgement is tested without the host.
type hostFacts struct {
	links   map[string]linkFact // by interface name
	addrs   []netip.Prefix      // assigned to any interface
	sockets []socketFact        // bound on a port some hostListener wants
	// seesAll is set when the gatherer could look into every process
	// (root), so a socket without a process is held from another PID
	// namespace (a container).
	seesAll bool
	// account is the user halb runs as; nil when no such user exists here.
	account *account
	files   map[string]fileFact // by path as configured
}

type linkFact struct {
	up      bool // administratively up (IFF_UP)
	running bool // operationally up: carrier (IFF_RUNNING)
}

// socketFact is one listening TCP socket or bound UDP socket.
type socketFact struct {
	proto string // "tcp" or "udp"
	local netip.AddrPort
	uid   int
	user  string     // name of uid, "" when unknown
	procs []procFact // the processes holding it that this user can see
}

type procFact struct {
	pid     int
	command string // /proc/PID/comm
}

type account struct {
	name   string
	uid    int
	groups []int  // every group, the primary one included
	group  string // the primary group's name
}

// fileFact describes a configured file and every directory leading to it.
type fileFact struct {
	err  error       // why it could not be examined; fs.ErrNotExist: missing
	file inodeFact   // the file itself, symbolic links followed
	dirs []inodeFact // the directories halb passes through to reach it
}

type inodeFact struct {
	path       string
	mode       fs.FileMode
	uid, gid   int
	owner, grp string // names of uid and gid, "" when unknown
}

// hostListener is a socket halb will bind on this host.
type hostListener struct {
	what  string // as the operator knows it: "frontend k8s_apiserver"
	proto string
	at    netip.AddrPort
}

// hostFile is a file halb reads.
type hostFile struct {
	field, path string
	// optional files may be missing: halb creates them (keyring_file).
	optional bool
}

// hostProblem is one finding about this host. A note is no problem (halb
// already runs, say) and does not change the exit status.
type hostProblem struct {
	subject, msg string
	note         bool
}

func (p hostProblem) String() string { return p.subject + ": " + p.msg }

// hostListeners lists the sockets halb binds as node: the gossip port (tcp
// and udp) on its address, every frontend, and the stats listeners.
func hostListeners(cfg *config.Config, node config.Node) []hostListener {
	var ls []hostListener
	if c := cfg.Cluster; c != nil && node.Address.IsValid() {
		at := netip.AddrPortFrom(node.Address, uint16(c.Port))
		ls = append(ls, hostListener{"gossip", "tcp", at}, hostListener{"gossip", "udp", at})
	}
	for _, f := range cfg.Frontends {
		ls = append(ls, hostListener{"frontend " + f.Name, "tcp", f.Bind})
	}
	if st := cfg.Stats; st != nil {
		ls = append(ls, hostListener{"stats.bind", "tcp", st.Bind})
		if st.MetricsBind.IsValid() {
			ls = append(ls, hostListener{"stats.metrics_bind", "tcp", st.MetricsBind})
		}
	}
	return ls
}

// hostFiles lists the files halb reads at start: the config itself, the
// gossip keys, the check credentials and the stats password file.
func hostFiles(cfg *config.Config, configPath string) []hostFile {
	files := []hostFile{{field: "config", path: configPath}}
	if c := cfg.Cluster; c != nil && !c.InsecureGossip {
		files = append(files, hostFile{field: "cluster.key_file", path: c.KeyFile})
		files = append(files, hostFile{field: "cluster.keyring_file", path: c.KeyringFile, optional: true})
	}
	for i, b := range cfg.Backends {
		if b.Health.Type != config.CheckTLS && b.Health.Type != config.CheckHTTPS {
			continue // the files are not read then
		}
		for _, f := range tlsFiles(b.Health) {
			files = append(files, hostFile{field: fmt.Sprintf("backends[%d].health.tls.%s", i, f.field), path: f.path})
		}
	}
	if st := cfg.Stats; st != nil {
		files = append(files, hostFile{field: "stats.password_file", path: st.PasswordFile})
	}
	return slices.DeleteFunc(files, func(f hostFile) bool { return f.path == "" })
}

// judgeHost lists what stands in the way of running halb as node on the
// host that facts describe, each with its fix. node must be in
// cfg.Cluster.Nodes when there is a cluster; user names the account halb
// runs as.
func judgeHost(cfg *config.Config, configPath, node, user string, f hostFacts) []hostProblem {
	var ps []hostProblem
	if c := cfg.Cluster; c != nil {
		i := slices.IndexFunc(c.Nodes, func(n config.Node) bool { return n.Name == node })
		if i < 0 {
			return []hostProblem{{subject: "--node " + node, msg: "not in cluster.nodes"}}
		}
		ps = append(ps, judgeLinks(cfg, i, f)...)
		ps = append(ps, judgeAddress(c.Nodes[i], i, f)...)
	}
	var n config.Node
	if cfg.Cluster != nil {
		n, _ = cfg.Cluster.Node(node)
	}
	for _, l := range hostListeners(cfg, n) {
		if p, ok := judgeListener(l, f.sockets, f.seesAll); ok {
			ps = append(ps, p)
		}
	}
	return append(ps, judgeFiles(hostFiles(cfg, configPath), user, f)...)
}

// judgeLinks checks that the interface of every VIP exists and is up; the
// node's own interface, when set, overrides the VIP's.
func judgeLinks(cfg *config.Config, i int, f hostFacts) []hostProblem {
	var ps []hostProblem
	seen := map[string]bool{}
	for vi, v := range cfg.VIPs {
		name, field := v.Interface, fmt.Sprintf("vips[%d].interface", vi)
		if n := cfg.Cluster.Nodes[i]; n.Interface != "" {
			name, field = n.Interface, fmt.Sprintf("cluster.nodes[%d].interface", i)
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		subject := fmt.Sprintf("%s %s", field, name)
		l, ok := f.links[name]
		switch {
		case !ok:
			names := make([]string, 0, len(f.links))
			for n := range f.links {
				names = append(names, n)
			}
			slices.Sort(names)
			ps = append(ps, hostProblem{subject: subject, msg: fmt.Sprintf(
				"no such interface on this host (it has %s): set cluster.nodes[%d].interface to the one that carries %s",
				strings.Join(names, ", "), i, v.Address.Masked())})
		case !l.up:
			ps = append(ps, hostProblem{subject: subject, msg: fmt.Sprintf(
				"interface is down: bring it up (ip link set %s up) and make sure it comes up at boot", name)})
		case !l.running:
			ps = append(ps, hostProblem{subject: subject, msg: "interface is up but has no carrier: check the cable, switch port or virtual link, or the VIP will be unreachable"})
		}
	}
	return ps
}

// judgeAddress checks that the node's address, which gossip binds to, is
// one of this host's.
func judgeAddress(n config.Node, i int, f hostFacts) []hostProblem {
	want := n.Address.Unmap()
	if slices.ContainsFunc(f.addrs, func(p netip.Prefix) bool {
		// A loopback prefix makes every address in it local (127.0.0.0/8).
		return p.Addr().Unmap() == want || p.Addr().IsLoopback() && p.Contains(want)
	}) {
		return nil
	}
	var have []string
	for _, p := range f.addrs {
		if a := p.Addr(); !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			have = append(have, a.String())
		}
	}
	if len(have) == 0 {
		have = []string{"no other address"}
	}
	return []hostProblem{{subject: fmt.Sprintf("cluster.nodes[%d].address %s", i, n.Address), msg: fmt.Sprintf(
		"not an address of this host (it has %s): gossip binds to it; if this host is another node, pass --node NAME, else correct the address or add it to the host's network config",
		strings.Join(have, ", "))}}
}

// judgeListener reports who holds the port l wants, if anyone. halb
// itself holding it means halb already runs: a note, not a problem.
func judgeListener(l hostListener, sockets []socketFact, seesAll bool) (hostProblem, bool) {
	subject := fmt.Sprintf("%s %s/%s", l.what, l.at, l.proto)
	var holders []socketFact
	for _, s := range sockets {
		if s.proto == l.proto && s.local.Port() == l.at.Port() && config.BindsOverlap(s.local.Addr(), l.at.Addr()) {
			holders = append(holders, s)
		}
	}
	if len(holders) == 0 {
		return hostProblem{}, false
	}
	var names []string
	allHalb := true
	for _, s := range holders {
		verb := "listening"
		if s.proto == "udp" {
			verb = "bound"
		}
		if len(s.procs) == 0 {
			allHalb = false
			who := "uid " + strconv.Itoa(s.uid)
			if s.user != "" {
				who = fmt.Sprintf("user %s (uid %d)", s.user, s.uid)
			}
			hint := "run halb check as root to name it"
			if seesAll {
				hint = "in another PID namespace, such as a container"
			}
			names = append(names, fmt.Sprintf("a process of %s %s on %s (%s)", who, verb, s.local, hint))
			continue
		}
		byCommand := map[string][]string{}
		var commands []string
		for _, p := range s.procs {
			if p.command != "halb" {
				allHalb = false
			}
			if _, ok := byCommand[p.command]; !ok {
				commands = append(commands, p.command)
			}
			byCommand[p.command] = append(byCommand[p.command], strconv.Itoa(p.pid))
		}
		for _, c := range commands {
			names = append(names, fmt.Sprintf("%s (pid %s) %s on %s", c, strings.Join(byCommand[c], ", "), verb, s.local))
		}
	}
	held := strings.Join(names, "; ")
	if allHalb {
		return hostProblem{subject: subject, msg: "held by " + held + ": halb already runs here", note: true}, true
	}
	return hostProblem{subject: subject, msg: "port held by " + held + ": stop it before starting halb (or move it during migration)"}, true
}

// judgeFiles checks that every file halb reads at start exists and that
// user can read it. A missing key_file is fine once the keyring file
// exists, which wins over it.
func judgeFiles(files []hostFile, user string, f hostFacts) []hostProblem {
	var ps []hostProblem
	if f.account == nil {
		ps = append(ps, hostProblem{subject: "--user " + user, note: true, msg: "no such user on this host: who may read the files is not checked (create the user, as the package does, or pass --user with the user halb runs as)"})
	}
	haveKeyring := false
	for _, hf := range files {
		if hf.field == "cluster.keyring_file" && f.files[hf.path].err == nil {
			haveKeyring = true
		}
	}
	for _, hf := range files {
		ff := f.files[hf.path]
		subject := hf.field + " " + hf.path
		switch {
		case errors.Is(ff.err, fs.ErrNotExist):
			if hf.optional || (hf.field == "cluster.key_file" && haveKeyring) {
				continue
			}
			if strings.HasPrefix(hf.field, "backends[") {
				// halb starts without it (the cluster behind the VIP may
				// not exist yet): the check reports itself rejected for
				// credentials and loads the file once it appears.
				ps = append(ps, hostProblem{subject: subject, msg: "does not exist on this host yet: halb starts, but this backend's checks are rejected (panic routing forwards meanwhile) until it appears; " + missingFix(hf.field)})
				continue
			}
			ps = append(ps, hostProblem{subject: subject, msg: "does not exist on this host: halb does not start without it; " + missingFix(hf.field)})
			continue
		case ff.err != nil:
			ps = append(ps, hostProblem{subject: subject, note: true, msg: fmt.Sprintf("cannot examine it (%v): run halb check as root", ff.err)})
			continue
		case f.account == nil:
			continue
		}
		if p, ok := judgeAccess(subject, f.account, ff); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// missingFix says where a missing file comes from.
func missingFix(field string) string {
	switch {
	case field == "config":
		return "copy the config here"
	case field == "cluster.key_file":
		return "copy the cluster's gossip key here (halb keygen makes one for a new cluster)"
	case strings.HasPrefix(field, "backends["):
		return "copy the check credential here (docs/getting-started-talos.md, Check credentials)"
	}
	return "create it or correct the path"
}

// judgeAccess reports the first thing that keeps a from reading the file:
// a directory on the way it may not enter, or the file's own mode. It
// works from ownership and mode bits alone; ACLs are not consulted.
func judgeAccess(subject string, a *account, ff fileFact) (hostProblem, bool) {
	for _, d := range ff.dirs {
		if !permits(a, d, 1) {
			return hostProblem{subject: subject, msg: fmt.Sprintf(
				"user %s cannot enter directory %s (%s): %s", a.name, d.path, describe(d), grantFix(a, d, "x"))}, true
		}
	}
	if !permits(a, ff.file, 4) {
		return hostProblem{subject: subject, msg: fmt.Sprintf(
			"user %s cannot read %s (%s): %s", a.name, ff.file.path, describe(ff.file), grantFix(a, ff.file, "r"))}, true
	}
	return hostProblem{}, false
}

// permits says whether a has bit (4 read, 2 write, 1 search) on i by the
// owner, group and other classes. root may do anything: halb run as root
// has CAP_DAC_OVERRIDE unless its unit takes it away.
func permits(a *account, i inodeFact, bit fs.FileMode) bool {
	perm := i.mode.Perm()
	switch {
	case a.uid == 0:
		return true
	case i.uid == a.uid:
		return perm>>6&bit != 0
	case slices.Contains(a.groups, i.gid):
		return perm>>3&bit != 0
	}
	return perm&bit != 0
}

// describe shows an inode as ls would: owner:group and octal mode.
func describe(i inodeFact) string {
	owner, grp := i.owner, i.grp
	if owner == "" {
		owner = strconv.Itoa(i.uid)
	}
	if grp == "" {
		grp = strconv.Itoa(i.gid)
	}
	return fmt.Sprintf("%s:%s %04o", owner, grp, i.mode.Perm())
}

// grantFix gives the group of i the permission a lacks, through a's
// primary group when i belongs to another: the least it takes, and what
// the guide does for /etc/halb.
func grantFix(a *account, i inodeFact, perm string) string {
	p := shellQuote(i.path)
	if slices.Contains(a.groups, i.gid) {
		return fmt.Sprintf("chmod g+%s %s", perm, p)
	}
	grp := a.group
	if grp == "" {
		grp = a.name
	}
	return fmt.Sprintf("chgrp %s %s && chmod g+%s %s", grp, p, perm, p)
}

// shellSafe are the characters a path may hold and still be pasted into a
// shell unquoted.
const shellSafe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:,@%="

// shellQuote quotes a path for a command line when it needs it, so a fix
// can be pasted as it is.
func shellQuote(path string) string {
	if strings.IndexFunc(path, func(r rune) bool { return !strings.ContainsRune(shellSafe, r) }) >= 0 {
		return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
	}
	return path
}
