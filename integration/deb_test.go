//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/test/support"
)

// debRoot is a clean Debian root file system, unpacked for one test, that
// commands run in (chroot) with /proc and /dev of their own mount
// namespace, so nothing a command does there reaches the host.
type debRoot struct {
	dir string
}

// command runs argv as user (root when empty) inside the root, in the
// network namespace netns when it is not empty. Every step execs the next,
// so the returned command's process is argv's own: killing it by PID
// stops the program itself.
func (r debRoot) command(ctx context.Context, netns, user string, argv ...string) *exec.Cmd {
	// A private mount namespace per command: the mounts vanish with it.
	const script = `set -e
root=$1; shift
mount --make-rprivate /
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
exec chroot "$root" "$@"`
	var args []string
	if netns != "" {
		args = append(args, "ip", "netns", "exec", netns)
	}
	args = append(args, "unshare", "--mount", "--", "/bin/sh", "-c", script, "sh", r.dir)
	if user != "" {
		args = append(args, "setpriv", "--reuid="+user, "--regid="+user, "--init-groups", "--")
	}
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", "TERM=dumb"}
	return cmd
}

// run runs argv as root in the root and fails the test when it fails.
func (r debRoot) run(t *testing.T, ctx context.Context, argv ...string) string {
	t.Helper()
	out, err := r.command(ctx, "", "", argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("in the Debian root: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// path is name inside the root, seen from the host.
func (r debRoot) path(name string) string { return filepath.Join(r.dir, name) }

// Issue 15 acceptance: `make deb`, installed on a clean Debian 12 (a
// minbase root made by mmdebstrap from deb.debian.org, see `make
// deb-test`), passes deploy/test-deb.sh there — files and permissions,
// `man halb`, bash/zsh/fish completion, `halb --version` equal to the
// package version, reinstall and purge — and the unit's reload fails on a
// config the daemon cannot take, while the daemon keeps the old one.
//
// There is no systemd here: `systemctl reload halb` runs the unit's
// ExecReload= as the unit's User=, and that is what this test runs, read
// from the installed unit file, against the unit's ExecStart= started in a
// network namespace of the test's own (127.0.0.1 there, not the host's).
func TestDebInstall(t *testing.T) {
	if env.skip != "" {
		t.Skip(env.skip)
	}
	deb, rootfs := os.Getenv("HALB_DEB"), os.Getenv("HALB_DEB_ROOTFS")
	if deb == "" || rootfs == "" {
		t.Skip("HALB_DEB (the .deb) and HALB_DEB_ROOTFS (a Debian 12 root tarball) are unset: run `make deb-test`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := unpackRoot(t, ctx, rootfs)

	// The package's own test script, as an operator would run it on a
	// fresh machine: it installs, checks and purges.
	copyInto(t, deb, r.path("tmp/halb.deb"))
	copyInto(t, "../deploy/test-deb.sh", r.path("src/deploy/test-deb.sh"))
	copyInto(t, "../deploy/examples/talos.yaml", r.path("src/deploy/examples/talos.yaml"))
	out := r.run(t, ctx, "bash", "/src/deploy/test-deb.sh", "/tmp/halb.deb")
	t.Logf("deploy/test-deb.sh in a clean Debian 12:\n%s", out)
	for _, want := range []string{"ok: man halb", "ok: halb --version", "Tab completes halb sta", "PASS: halb.deb"} {
		if !strings.Contains(out, want) {
			t.Errorf("test-deb.sh did not report %q", want)
		}
	}

	// Installed again, and configured as an operator would: a loopback
	// config from the examples, the admin socket under RuntimeDirectory.
	r.run(t, ctx, "dpkg", "-i", "/tmp/halb.deb")
	unit, err := os.ReadFile(r.path("lib/systemd/system/halb.service"))
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, string(unit), r)
	example, err := os.ReadFile("../deploy/examples/loopback.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(example), "socket: /tmp/halb-loopback.sock", "socket: /run/halb/admin.sock", 1)
	if cfg == string(example) {
		t.Fatal("deploy/examples/loopback.yaml has no admin socket /tmp/halb-loopback.sock to replace")
	}
	const configFile = "/etc/halb/halb.yaml"
	if !strings.Contains(strings.Join(u.start, " "), configFile) || !strings.Contains(strings.Join(u.reload, " "), configFile) {
		t.Fatalf("the unit's ExecStart %q and ExecReload %q do not both name %s", u.start, u.reload, configFile)
	}
	// WriteFile keeps the owner and mode dpkg gave the conffile (root:halb 0640).
	writeConfig := func(s string) {
		t.Helper()
		if err := os.WriteFile(r.path(configFile), []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(cfg)
	// What RuntimeDirectory=halb does before ExecStart.
	r.run(t, ctx, "install", "-d", "-o", u.user, "-g", u.user, "-m", "0755", "/run/halb")

	ns := fmt.Sprintf("halb-deb-%d", os.Getpid())
	if b, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, b)
		}
	})
	if b, err := exec.CommandContext(ctx, "ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v\n%s", ns, err, b)
	}

	// Type=notify: systemd listens on NOTIFY_SOCKET and counts the
	// service started at READY=1; so does this test.
	notify := listenNotify(t, r)
	var log support.Log // written by exec's copying goroutines
	daemon := r.command(ctx, ns, u.user, u.start...)
	daemon.Env = append(daemon.Env, "NOTIFY_SOCKET=/run/notify.sock")
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatalf("start %q: %v", u.start, err)
	}
	// exited is closed when the daemon has exited, with waitErr set.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = daemon.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = daemon.Process.Kill()
		<-exited
		if waitErr == nil {
			t.Errorf("halb exited 0 before the test stopped it")
		}
		if t.Failed() {
			t.Logf("halb's log:\n%s", log.String())
		}
	})
	awaitNotify := func(what, want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m := <-notify:
				if strings.Contains("\n"+m+"\n", "\n"+want+"\n") {
					return
				}
			case <-exited:
				t.Fatalf("halb exited waiting for %s after %s: %v\n%s", want, what, waitErr, log.String())
			case <-timeout:
				t.Fatalf("no %s within 20s after %s", want, what)
			}
		}
	}
	awaitNotify("the start", "READY=1")

	status := func() admin.Snapshot {
		t.Helper()
		// status exits non-zero for DEGRADED and FAIL (no server answers
		// here); only the JSON matters.
		out, _ := r.command(ctx, ns, u.user, "halb", "status", "-o", "json", "--socket", "/run/halb/admin.sock").Output()
		var s admin.Snapshot
		if err := json.Unmarshal(out, &s); err != nil || len(s.Backends) != 1 {
			t.Fatalf("halb status -o json: %v\n%s\nhalb's log:\n%s", err, out, log.String())
		}
		return s
	}
	reload := func() (string, error) {
		out, err := r.command(ctx, ns, u.user, u.reload...).CombinedOutput()
		return string(out), err
	}

	// A good change is applied: the reload command works here at all.
	cfg2 := strings.Replace(cfg, "      - name: three\n        address: 127.0.0.13:8080\n", "", 1)
	if cfg2 == cfg {
		t.Fatal("deploy/examples/loopback.yaml has no server three to remove")
	}
	writeConfig(cfg2)
	if out, err := reload(); err != nil {
		t.Fatalf("ExecReload %q with a valid change: %v\n%s", u.reload, err, out)
	}
	awaitNotify("the reload", "RELOADING=1")
	awaitNotify("the reload", "READY=1")
	good := status()
	if n := len(good.Backends[0].Servers); n != 2 {
		t.Fatalf("after the reload that removed server three, %d servers, want 2", n)
	}

	broken := map[string]string{
		"not YAML": "frontends: [\n",
		// Valid, but log is read only at start: the daemon refuses it.
		"a restart-only change": strings.Replace(cfg2, "level: info", "level: debug", 1),
	}
	for name, c := range broken {
		if c == cfg2 {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		writeConfig(c)
		out, err := reload()
		t.Logf("ExecReload with %s: %v\n%s", name, err, out)
		if err == nil {
			t.Errorf("ExecReload %q with %s exited 0; systemctl reload would report success", u.reload, name)
		} else if !strings.Contains(out, "reload refused") {
			t.Errorf("ExecReload with %s failed without saying the reload was refused:\n%s", name, out)
		}
		select {
		case <-exited:
			t.Fatalf("halb exited after the refused reload (%s): %v", name, waitErr)
		default:
		}
		s := status()
		if s.Node.Fingerprint != good.Node.Fingerprint || len(s.Backends[0].Servers) != 2 {
			t.Errorf("after the refused reload (%s) halb runs fingerprint %s with %d servers, want %s with 2",
				name, s.Node.Fingerprint, len(s.Backends[0].Servers), good.Node.Fingerprint)
		}
	}
}

// listenNotify listens where the daemon's NOTIFY_SOCKET=/run/notify.sock
// points inside the root, as systemd does, and passes each message on.
func listenNotify(t *testing.T, r debRoot) <-chan string {
	t.Helper()
	path := r.path("run/notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	// The daemon runs as the unit's user; systemd's socket is writable to all too.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case msgs <- string(buf[:n]):
			default: // nobody waits for it; the test reads only what it awaits
			}
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	return msgs
}

// unit is what the test takes from the installed halb.service.
type unit struct {
	start, reload []string // ExecStart=, ExecReload=, variables expanded
	user          string
}

// parseUnit reads ExecStart=, ExecReload= and User= from a unit file, with
// $VAR words expanded from its EnvironmentFile= inside the root as systemd
// does (an unquoted $VAR splits into words; unset is none). It fails on
// what this small parser does not know, so a changed unit is noticed.
func parseUnit(t *testing.T, text string, r debRoot) unit {
	t.Helper()
	vars := map[string]string{}
	var u unit
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		switch key {
		case "EnvironmentFile":
			readEnvFile(t, r.path(strings.TrimPrefix(val, "-")), vars)
		case "User":
			u.user = val
		case "ExecStart":
			u.start = expandExec(t, val, vars)
		case "ExecReload":
			u.reload = expandExec(t, val, vars)
		}
	}
	if len(u.start) == 0 || len(u.reload) == 0 || u.user == "" {
		t.Fatalf("the unit lacks ExecStart=, ExecReload= or User=:\n%s", text)
	}
	return u
}

func readEnvFile(t *testing.T, path string, vars map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("EnvironmentFile: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=VALUE", path, line)
		}
		vars[k] = strings.Trim(v, `"`)
	}
}

func expandExec(t *testing.T, line string, vars map[string]string) []string {
	t.Helper()
	if strings.ContainsAny(line[:1], "-@+!:") || strings.ContainsAny(line, `"'\;`) {
		t.Fatalf("exec line %q uses syntax this test does not parse", line)
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		name, isVar := strings.CutPrefix(w, "$")
		if !isVar {
			if strings.Contains(w, "$") {
				t.Fatalf("exec line %q: a variable inside a word", line)
			}
			argv = append(argv, w)
			continue
		}
		argv = append(argv, strings.Fields(vars[strings.Trim(name, "{}")])...)
	}
	return argv
}

// unpackRoot unpacks the root tarball into a directory the test removes.
func unpackRoot(t *testing.T, ctx context.Context, tarball string) debRoot {
	t.Helper()
	dir := t.TempDir()
	if b, err := exec.CommandContext(ctx, "tar", "-C", dir, "--numeric-owner", "-xpf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tarball, err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/debian_version")); err != nil {
		t.Fatalf("%s is not a Debian root: %v", tarball, err)
	}
	return debRoot{dir: dir}
}

func copyInto(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
