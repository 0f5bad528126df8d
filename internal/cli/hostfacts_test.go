package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"halb/internal/config"
)

// holdPorts listens on TCP ip:0 and binds UDP on the same port, so that
// both protocols are held on one port by this process until the test ends.
func holdPorts(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	for range 20 { // the UDP port may be taken by someone else: try another
		ln := listenOn(t, ip)
		at := netip.MustParseAddrPort(ln.Addr().String())
		pc, err := net.ListenPacket("udp", at.String())
		if err != nil {
			_ = ln.Close()
			continue
		}
		t.Cleanup(func() { _ = pc.Close() })
		return at
	}
	t.Fatalf("no port on %s free for both TCP and UDP", ip)
	return netip.AddrPort{}
}

func myCommand(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// TestGatherHostFacts reads the real /proc: the TCP and UDP sockets this
// test holds are found and named with this process.
func TestGatherHostFacts(t *testing.T) {
	comm := myCommand(t)
	held := holdPorts(t, "127.0.0.91")
	free := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.92"), held.Port())
	ls := []hostListener{{"a", "tcp", held}, {"b", "udp", held}, {"c", "tcp", free}}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(file, []byte("k"), 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	files := []hostFile{{field: "f", path: link}, {field: "g", path: filepath.Join(dir, "none")}}

	f, err := gatherHostFacts("/proc", ls, files, me.Username)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}

	for _, proto := range []string{"tcp", "udp"} {
		var found []socketFact
		for _, s := range f.sockets {
			if s.proto == proto && s.local == held {
				found = append(found, s)
			}
		}
		want := procFact{pid: os.Getpid(), command: comm}
		if len(found) != 1 || len(found[0].procs) != 1 || found[0].procs[0] != want {
			t.Errorf("%s %s: sockets %+v, want one held by %+v", proto, held, found, want)
		}
	}
	for _, s := range f.sockets {
		if s.local.Port() != held.Port() {
			t.Errorf("socket %+v is on a port nobody asked about", s)
		}
	}
	if p, ok := judgeListener(ls[2], f.sockets, f.seesAll); ok {
		t.Errorf("%s is free, judged %q", free, p)
	}
	if p, ok := judgeListener(ls[0], f.sockets, f.seesAll); !ok || !strings.Contains(p.msg, fmt.Sprintf("%s (pid %d) listening on %s", comm, os.Getpid(), held)) {
		t.Errorf("judged %q, want this process named", p)
	}

	if l, ok := f.links["lo"]; !ok || !l.up {
		t.Errorf("links %v: want lo, up", f.links)
	}
	if !judgeAddressHere(f, "127.0.0.1") {
		t.Errorf("addresses %v lack 127.0.0.1", f.addrs)
	}

	if f.account == nil || f.account.name != me.Username || fmt.Sprint(f.account.uid) != me.Uid {
		t.Errorf("account %+v, want %s (uid %s)", f.account, me.Username, me.Uid)
	}
	ff := f.files[link]
	if ff.err != nil || ff.file.path != file || ff.file.mode.Perm() != 0o640 || fmt.Sprint(ff.file.uid) != me.Uid {
		t.Errorf("file %+v, want %s, 0640, owned by uid %s", ff, file, me.Uid)
	}
	if len(ff.dirs) == 0 || ff.dirs[0].path != "/" || ff.dirs[len(ff.dirs)-1].path != dir {
		t.Errorf("directories %+v, want / first and %s last", ff.dirs, dir)
	}
	if _, err := lookupAccount("no-such-user-halb-test"); err != nil {
		t.Errorf("an unknown user is no error: %v", err)
	}
	if a, _ := lookupAccount("no-such-user-halb-test"); a != nil {
		t.Errorf("unknown user: %+v, want nil", a)
	}
	if err := f.files[filepath.Join(dir, "none")].err; !os.IsNotExist(err) {
		t.Errorf("missing file: err %v, want not-exist", err)
	}
}

// judgeAddressHere says whether a counts as an address of the host f
// describes.
func judgeAddressHere(f hostFacts, a string) bool {
	return len(judgeAddress(config.Node{Name: "n", Address: netip.MustParseAddr(a)}, 0, f)) == 0
}

// TestCheckHost runs `halb check --node` on this host: a port this test
// holds is a problem naming this process; with the ports free, exit 0.
func TestCheckHost(t *testing.T) {
	comm := myCommand(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	front, gossip := holdPorts(t, "127.0.0.93"), holdPorts(t, "127.0.0.94")
	doc := func(frontend netip.AddrPort, node netip.Addr) string {
		return fmt.Sprintf(`frontends:
  - {name: api, bind: "%s", backend: k8s}
backends:
  - name: k8s
    servers: [{name: cp1, address: "127.0.0.1:1"}]
cluster:
  insecure_gossip: true
  port: %d
  nodes: [{name: lb1, address: %s}]
vips:
  - {address: 127.0.0.96/32, interface: lo}
`, frontend, gossip.Port(), node)
	}

	t.Run("ports held", func(t *testing.T) {
		path := writeConfig(t, doc(front, gossip.Addr()))
		out, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--node", "lb1", "--user", me.Username)
		if code != 1 {
			t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		by := fmt.Sprintf("held by %s (pid %d)", comm, os.Getpid())
		for _, want := range []string{
			fmt.Sprintf("host lb1: frontend api %s/tcp: port %s listening on %s: stop it before starting halb", front, by, front),
			fmt.Sprintf("host lb1: gossip %s/tcp: port %s listening on %s", gossip, by, gossip),
			fmt.Sprintf("host lb1: gossip %s/udp: port %s bound on %s", gossip, by, gossip),
			"host lb1: 3 problem(s)",
		} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut)
			}
		}
	})
	t.Run("ready", func(t *testing.T) {
		// The same ports on other loopback addresses are free.
		frontend := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.95"), front.Port())
		path := writeConfig(t, doc(frontend, netip.MustParseAddr("127.0.0.97")))
		out, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--node", "lb1", "--user", me.Username)
		if code != 0 || !strings.Contains(out, "host lb1: OK: 3 port(s) and 1 file(s) checked for user "+me.Username) {
			t.Fatalf("exit %d, want 0 and the host OK\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})
	t.Run("a host problem wins over a failed probe", func(t *testing.T) {
		path := writeConfig(t, doc(front, gossip.Addr()))
		out, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--node", "lb1", "--user", me.Username, "--probe")
		if code != 1 || !strings.Contains(out, "probed 1 server(s) from lb1") || !strings.Contains(out, "1 of 1 check(s) failed") {
			t.Fatalf("exit %d, want 1 after probing anyway\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})
	t.Run("--host picks the node as halb run does", func(t *testing.T) {
		t.Setenv(nodeEnv, "lb1")
		path := writeConfig(t, doc(front, netip.MustParseAddr("127.0.0.97")))
		_, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--host", "--user", me.Username)
		if code != 1 || !strings.Contains(errOut, "host lb1: frontend api") {
			t.Fatalf("exit %d, want 1 checking lb1\nstderr:\n%s", code, errOut)
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		path := writeConfig(t, doc(front, gossip.Addr()))
		_, errOut, code := run(context.Background(), newCheckCmd(), "--config", path, "--node", "lb9")
		if code != 1 || !strings.Contains(errOut, "--node lb9: not in cluster.nodes (lb1)") {
			t.Fatalf("exit %d, stderr %q; want 1 naming the node and the entries", code, errOut)
		}
	})
}
