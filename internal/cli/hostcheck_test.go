package cli

import (
	"encoding/binary"
	"io/fs"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

const hostDoc = `frontends:
  - {name: k8s_apiserver, bind: "192.168.66.160:6443", backend: k8s}
backends:
  - name: k8s
    health: {type: https, path: /readyz, tls: {kubeconfig: /etc/halb/health.kubeconfig}}
    servers: [{name: cp1, address: "192.168.66.161:6443"}]
cluster:
  key_file: /etc/halb/gossip.key
  keyring_file: /var/lib/halb/gossip.keyring
  nodes:
    - {name: lb1, address: 192.168.66.151}
    - {name: lb2, address: 192.168.66.152, interface: ens19}
vips:
  - {address: 192.168.66.160/24, interface: eth0}
stats:
  bind: 127.0.0.1:9600
  metrics_bind: 127.0.0.1:9601
  password_file: /etc/halb/stats.passwd
`

const (
	rootID = 0
	halbID = 998
)

func inode(path string, mode fs.FileMode, uid, gid int) inodeFact {
	names := map[int]string{rootID: "root", halbID: "halb"}
	return inodeFact{path: path, mode: mode, uid: uid, gid: gid, owner: names[uid], grp: names[gid]}
}

// readyHost is lb1 as the guide sets it up: nothing in the way.
func readyHost() hostFacts {
	dirs := func(ds ...inodeFact) []inodeFact {
		return append([]inodeFact{inode("/", fs.ModeDir|0o755, rootID, rootID)}, ds...)
	}
	etc := []inodeFact{inode("/etc", fs.ModeDir|0o755, rootID, rootID), inode("/etc/halb", fs.ModeDir|0o750, rootID, halbID)}
	file := func(path string, mode fs.FileMode, uid, gid int) fileFact {
		return fileFact{file: inode(path, mode, uid, gid), dirs: dirs(etc...)}
	}
	return hostFacts{
		links: map[string]linkFact{"lo": {up: true, running: true}, "eth0": {up: true, running: true}},
		addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("192.168.66.151/24"), netip.MustParsePrefix("fe80::1/64")},
		// Unrelated sockets on the same ports: another address, the other protocol.
		sockets: []socketFact{
			{proto: "tcp", local: netip.MustParseAddrPort("10.0.0.1:6443"), procs: []procFact{{pid: 40, command: "kube-apiserver"}}},
			{proto: "udp", local: netip.MustParseAddrPort("0.0.0.0:9600"), procs: []procFact{{pid: 41, command: "statsd"}}},
		},
		account: &account{name: "halb", uid: halbID, groups: []int{halbID}, group: "halb"},
		files: map[string]fileFact{
			"/etc/halb/halb.yaml":          file("/etc/halb/halb.yaml", 0o640, rootID, halbID),
			"/etc/halb/gossip.key":         file("/etc/halb/gossip.key", 0o640, rootID, halbID),
			"/var/lib/halb/gossip.keyring": {err: &fs.PathError{Op: "stat", Path: "/var/lib/halb/gossip.keyring", Err: fs.ErrNotExist}},
			"/etc/halb/health.kubeconfig":  file("/etc/halb/health.kubeconfig", 0o600, halbID, halbID),
			"/etc/halb/stats.passwd":       file("/etc/halb/stats.passwd", 0o644, rootID, rootID),
		},
	}
}

func missing(path string) fileFact {
	return fileFact{err: &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}}
}

func TestJudgeHost(t *testing.T) {
	tests := []struct {
		name   string
		doc    string // hostDoc when empty
		node   string // lb1 when empty
		user   string // halb when empty
		change func(*hostFacts)
		want   []string
	}{
		{name: "ready"},
		{
			name:   "interface missing",
			change: func(f *hostFacts) { delete(f.links, "eth0"); f.links["ens3"] = linkFact{up: true, running: true} },
			want:   []string{"vips[0].interface eth0: no such interface on this host (it has ens3, lo): set cluster.nodes[0].interface to the one that carries 192.168.66.0/24"},
		},
		{
			name:   "interface down",
			change: func(f *hostFacts) { f.links["eth0"] = linkFact{} },
			want:   []string{"vips[0].interface eth0: interface is down: bring it up (ip link set eth0 up) and make sure it comes up at boot"},
		},
		{
			name:   "no carrier",
			change: func(f *hostFacts) { f.links["eth0"] = linkFact{up: true} },
			want:   []string{"vips[0].interface eth0: interface is up but has no carrier: check the cable, switch port or virtual link, or the VIP will be unreachable"},
		},
		{
			name: "the node's interface overrides the VIP's",
			node: "lb2",
			change: func(f *hostFacts) {
				f.addrs = append(f.addrs, netip.MustParsePrefix("192.168.66.152/24"))
				f.links["ens19"] = linkFact{}
			},
			want: []string{"cluster.nodes[1].interface ens19: interface is down: bring it up (ip link set ens19 up) and make sure it comes up at boot"},
		},
		{
			name:   "address not here",
			change: func(f *hostFacts) { f.addrs = f.addrs[:1] },
			want:   []string{"cluster.nodes[0].address 192.168.66.151: not an address of this host (it has no other address): gossip binds to it; if this host is another node, pass --node NAME, else correct the address or add it to the host's network config"},
		},
		{
			name: "any address of a loopback prefix is local",
			doc:  strings.ReplaceAll(hostDoc, "192.168.66.151}", "127.0.0.51}"),
		},
		{
			name:   "an address in another address's subnet is not local",
			change: func(f *hostFacts) { f.addrs = []netip.Prefix{netip.MustParsePrefix("192.168.66.150/24")} },
			want:   []string{"cluster.nodes[0].address 192.168.66.151: not an address of this host (it has 192.168.66.150): gossip binds to it; if this host is another node, pass --node NAME, else correct the address or add it to the host's network config"},
		},
		{
			name:   "IPv4-mapped local address counts",
			change: func(f *hostFacts) { f.addrs = []netip.Prefix{netip.MustParsePrefix("::ffff:192.168.66.151/120")} },
		},
		{
			name: "another node's address",
			node: "lb2",
			change: func(f *hostFacts) {
				f.links["ens19"] = linkFact{up: true, running: true}
			},
			want: []string{"cluster.nodes[1].address 192.168.66.152: not an address of this host (it has 192.168.66.151): gossip binds to it; if this host is another node, pass --node NAME, else correct the address or add it to the host's network config"},
		},
		{
			name: "haproxy on a wildcard holds a frontend's port",
			change: func(f *hostFacts) {
				f.sockets = append(f.sockets, socketFact{proto: "tcp", local: netip.MustParseAddrPort("0.0.0.0:6443"),
					procs: []procFact{{pid: 812, command: "haproxy"}, {pid: 813, command: "haproxy"}}})
			},
			want: []string{"frontend k8s_apiserver 192.168.66.160:6443/tcp: port held by haproxy (pid 812, 813) listening on 0.0.0.0:6443: stop it before starting halb (or move it during migration)"},
		},
		{
			name: "a dual-stack [::] listener holds an IPv4 port",
			change: func(f *hostFacts) {
				f.sockets = append(f.sockets, socketFact{proto: "tcp", local: netip.MustParseAddrPort("[::]:9601"), procs: []procFact{{pid: 7, command: "node_exporter"}}})
			},
			want: []string{"stats.metrics_bind 127.0.0.1:9601/tcp: port held by node_exporter (pid 7) listening on [::]:9601: stop it before starting halb (or move it during migration)"},
		},
		{
			name: "keepalived-era gossip port: udp only",
			change: func(f *hostFacts) {
				f.sockets = append(f.sockets, socketFact{proto: "udp", local: netip.MustParseAddrPort("192.168.66.151:7946"), procs: []procFact{{pid: 9, command: "serf"}}})
			},
			want: []string{"gossip 192.168.66.151:7946/udp: port held by serf (pid 9) bound on 192.168.66.151:7946: stop it before starting halb (or move it during migration)"},
		},
		{
			name: "a process this user cannot see",
			change: func(f *hostFacts) {
				f.sockets = append(f.sockets, socketFact{proto: "tcp", local: netip.MustParseAddrPort("127.0.0.1:9600"), uid: 108, user: "haproxy"})
			},
			want: []string{"stats.bind 127.0.0.1:9600/tcp: port held by a process of user haproxy (uid 108) listening on 127.0.0.1:9600 (run halb check as root to name it): stop it before starting halb (or move it during migration)"},
		},
		{
			name: "root sees no process: another PID namespace",
			change: func(f *hostFacts) {
				f.seesAll = true
				f.sockets = append(f.sockets, socketFact{proto: "tcp", local: netip.MustParseAddrPort("127.0.0.1:9600"), uid: 1000})
			},
			want: []string{"stats.bind 127.0.0.1:9600/tcp: port held by a process of uid 1000 listening on 127.0.0.1:9600 (in another PID namespace, such as a container): stop it before starting halb (or move it during migration)"},
		},
		{
			name: "halb already runs: notes, no problem",
			change: func(f *hostFacts) {
				halb := []procFact{{pid: 900, command: "halb"}}
				f.sockets = append(f.sockets,
					socketFact{proto: "tcp", local: netip.MustParseAddrPort("192.168.66.151:7946"), procs: halb},
					socketFact{proto: "udp", local: netip.MustParseAddrPort("192.168.66.151:7946"), procs: halb},
					socketFact{proto: "tcp", local: netip.MustParseAddrPort("192.168.66.160:6443"), procs: halb})
			},
			want: []string{
				"note: gossip 192.168.66.151:7946/tcp: held by halb (pid 900) listening on 192.168.66.151:7946: halb already runs here",
				"note: gossip 192.168.66.151:7946/udp: held by halb (pid 900) bound on 192.168.66.151:7946: halb already runs here",
				"note: frontend k8s_apiserver 192.168.66.160:6443/tcp: held by halb (pid 900) listening on 192.168.66.160:6443: halb already runs here",
			},
		},
		{
			name: "halb and another program on one port is a problem",
			change: func(f *hostFacts) {
				f.sockets = append(f.sockets, socketFact{proto: "tcp", local: netip.MustParseAddrPort("0.0.0.0:6443"),
					procs: []procFact{{pid: 900, command: "halb"}, {pid: 812, command: "haproxy"}}})
			},
			want: []string{"frontend k8s_apiserver 192.168.66.160:6443/tcp: port held by halb (pid 900) listening on 0.0.0.0:6443; haproxy (pid 812) listening on 0.0.0.0:6443: stop it before starting halb (or move it during migration)"},
		},
		{
			name: "key readable by root only",
			change: func(f *hostFacts) {
				ff := f.files["/etc/halb/gossip.key"]
				ff.file = inode("/etc/halb/gossip.key", 0o600, rootID, rootID)
				f.files["/etc/halb/gossip.key"] = ff
			},
			want: []string{"cluster.key_file /etc/halb/gossip.key: user halb cannot read /etc/halb/gossip.key (root:root 0600): chgrp halb /etc/halb/gossip.key && chmod g+r /etc/halb/gossip.key"},
		},
		{
			name: "file in halb's group without group read",
			change: func(f *hostFacts) {
				ff := f.files["/etc/halb/stats.passwd"]
				ff.file = inode("/etc/halb/stats.passwd", 0o600, rootID, halbID)
				f.files["/etc/halb/stats.passwd"] = ff
			},
			want: []string{"stats.password_file /etc/halb/stats.passwd: user halb cannot read /etc/halb/stats.passwd (root:halb 0600): chmod g+r /etc/halb/stats.passwd"},
		},
		{
			name: "owner bits count for the owner, not the other bits",
			change: func(f *hostFacts) {
				ff := f.files["/etc/halb/health.kubeconfig"]
				ff.file = inode("/etc/halb/health.kubeconfig", 0o044, halbID, halbID)
				f.files["/etc/halb/health.kubeconfig"] = ff
			},
			want: []string{"backends[0].health.tls.kubeconfig /etc/halb/health.kubeconfig: user halb cannot read /etc/halb/health.kubeconfig (halb:halb 0044): chmod g+r /etc/halb/health.kubeconfig"},
		},
		{
			name: "a directory on the way that halb cannot enter",
			change: func(f *hostFacts) {
				ff := f.files["/etc/halb/gossip.key"]
				ff.dirs = append(ff.dirs[:len(ff.dirs):len(ff.dirs)], inode("/etc/halb/secret", fs.ModeDir|0o700, rootID, rootID))
				ff.file.path = "/etc/halb/secret/gossip.key"
				f.files["/etc/halb/gossip.key"] = ff
			},
			want: []string{"cluster.key_file /etc/halb/gossip.key: user halb cannot enter directory /etc/halb/secret (root:root 0700): chgrp halb /etc/halb/secret && chmod g+x /etc/halb/secret"},
		},
		{
			name: "root reads anything",
			user: "root",
			change: func(f *hostFacts) {
				f.account = &account{name: "root", uid: rootID, groups: []int{rootID}, group: "root"}
				ff := f.files["/etc/halb/health.kubeconfig"]
				ff.file = inode("/etc/halb/health.kubeconfig", 0o000, halbID, halbID)
				f.files["/etc/halb/health.kubeconfig"] = ff
			},
		},
		{
			name: "no such user: said once, readability skipped",
			user: "lb",
			change: func(f *hostFacts) {
				f.account = nil
				ff := f.files["/etc/halb/gossip.key"]
				ff.file = inode("/etc/halb/gossip.key", 0o600, rootID, rootID)
				f.files["/etc/halb/gossip.key"] = ff
			},
			want: []string{"note: --user lb: no such user on this host: who may read the files is not checked (create the user, as the package does, or pass --user with the user halb runs as)"},
		},
		{
			name: "missing credential and key",
			change: func(f *hostFacts) {
				f.files["/etc/halb/gossip.key"] = missing("/etc/halb/gossip.key")
				f.files["/etc/halb/health.kubeconfig"] = missing("/etc/halb/health.kubeconfig")
			},
			want: []string{
				"cluster.key_file /etc/halb/gossip.key: does not exist on this host: halb does not start without it; copy the cluster's gossip key here (halb keygen makes one for a new cluster)",
				"backends[0].health.tls.kubeconfig /etc/halb/health.kubeconfig: does not exist on this host yet: halb starts, but this backend's checks are rejected (panic routing forwards meanwhile) until it appears; copy the check credential here (docs/getting-started-talos.md, Check credentials)",
			},
		},
		{
			name: "the keyring replaces a missing key file",
			change: func(f *hostFacts) {
				f.files["/etc/halb/gossip.key"] = missing("/etc/halb/gossip.key")
				f.files["/var/lib/halb/gossip.keyring"] = fileFact{
					file: inode("/var/lib/halb/gossip.keyring", 0o600, halbID, halbID),
					dirs: []inodeFact{inode("/var/lib/halb", fs.ModeDir|0o700, halbID, halbID)},
				}
			},
		},
		{
			name: "a file this user cannot examine",
			change: func(f *hostFacts) {
				f.files["/etc/halb/gossip.key"] = fileFact{err: &fs.PathError{Op: "stat", Path: "/etc/halb/gossip.key", Err: fs.ErrPermission}}
			},
			want: []string{"note: cluster.key_file /etc/halb/gossip.key: cannot examine it (stat /etc/halb/gossip.key: permission denied): run halb check as root"},
		},
		{
			name: "unknown node",
			node: "lb9",
			want: []string{"--node lb9: not in cluster.nodes"},
		},
		{
			name: "no cluster: ports and files only",
			doc: `frontends:
  - {name: api, bind: "0.0.0.0:6443", backend: k8s}
backends:
  - name: k8s
    servers: [{name: cp1, address: "192.168.66.161:6443"}]
`,
			node: "proxy1",
			change: func(f *hostFacts) {
				f.links, f.addrs = nil, nil
				f.sockets = append(f.sockets[:0:0], socketFact{proto: "tcp", local: netip.MustParseAddrPort("127.0.0.1:6443"), procs: []procFact{{pid: 5, command: "kubectl"}}})
			},
			want: []string{"frontend api 0.0.0.0:6443/tcp: port held by kubectl (pid 5) listening on 127.0.0.1:6443: stop it before starting halb (or move it during migration)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, node, user := tt.doc, tt.node, tt.user
			if doc == "" {
				doc = hostDoc
			}
			if node == "" {
				node = "lb1"
			}
			if user == "" {
				user = "halb"
			}
			cfg, err := config.Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			f := readyHost()
			if tt.change != nil {
				tt.change(&f)
			}
			var got []string
			for _, p := range judgeHost(cfg, "/etc/halb/halb.yaml", node, user, f) {
				s := p.String()
				if p.note {
					s = "note: " + s
				}
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("judgeHost (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHostListenersAndFiles(t *testing.T) {
	cfg, err := config.Parse([]byte(hostDoc))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := cfg.Cluster.Node("lb1")
	var ls []string
	for _, l := range hostListeners(cfg, n) {
		ls = append(ls, l.what+" "+l.proto+" "+l.at.String())
	}
	wantLs := []string{
		"gossip tcp 192.168.66.151:7946", "gossip udp 192.168.66.151:7946",
		"frontend k8s_apiserver tcp 192.168.66.160:6443",
		"stats.bind tcp 127.0.0.1:9600", "stats.metrics_bind tcp 127.0.0.1:9601",
	}
	if diff := cmp.Diff(wantLs, ls); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
	var files []string
	for _, f := range hostFiles(cfg, "/etc/halb/halb.yaml") {
		files = append(files, f.field+" "+f.path)
	}
	wantFs := []string{
		"config /etc/halb/halb.yaml",
		"cluster.key_file /etc/halb/gossip.key",
		"cluster.keyring_file /var/lib/halb/gossip.keyring",
		"backends[0].health.tls.kubeconfig /etc/halb/health.kubeconfig",
		"stats.password_file /etc/halb/stats.passwd",
	}
	if diff := cmp.Diff(wantFs, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestParseProcAddr(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the samples are from a little-endian host")
	}
	tests := []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"00000000:1F12", "0.0.0.0:7954"},
		{"00000000000000000000000000000000:1A0B", "[::]:6667"},
		{"00000000000000000000000001000000:0050", "[::1]:80"},
		{"0000000000000000FFFF00000100007F:0050", "127.0.0.1:80"}, // IPv4-mapped
	}
	for _, tt := range tests {
		got, err := parseProcAddr(tt.in)
		if err != nil || got.String() != tt.want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"0100007F", "0100007:1F90", "0100007F:XYZ", "01:0050"} {
		if got, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) = %v, want an error", bad, got)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/halb/gossip.key":   "/etc/halb/gossip.key",
		"/etc/halb/my key":       "'/etc/halb/my key'",
		"/etc/halb/it's; rm -rf": `'/etc/halb/it'\''s; rm -rf'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
