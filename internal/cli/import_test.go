package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"halb/internal/config"
)

const seedCfg = "../../testdata/seed-haproxy.cfg"

func runImport(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newImportCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestImportHAProxySeedToStdout(t *testing.T) {
	stdout, stderr, err := runImport(t, "haproxy", seedCfg, "--node", "lb1=192.168.66.151:200", "--node", "lb2=192.168.66.152:100", "--vip-interface", "ens18")
	if err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	cfg, err := config.Parse([]byte(stdout))
	if err != nil {
		t.Fatalf("output does not validate: %v\n%s", err, stdout)
	}
	if len(cfg.Backends) != 2 || len(cfg.Cluster.Nodes) != 2 || len(cfg.VIPs) != 1 || cfg.VIPs[0].Interface != "ens18" {
		t.Errorf("unexpected config: %d backends, cluster %+v, vips %+v", len(cfg.Backends), cfg.Cluster, cfg.VIPs)
	}
	for _, want := range []string{seedCfg + ":4: dropped, no effect: chroot", seedCfg + ":43: changes behaviour: stats auth admin:<password not shown>"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stdout+stderr, "your-secure-password") {
		t.Fatal("the stats password leaked")
	}
}

func TestImportHAProxyToFile(t *testing.T) {
	out := filepath.Join(t.TempDir(), "halb.yaml")
	stdout, stderr, err := runImport(t, "haproxy", seedCfg, "--out", out)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout should stay empty with -o, got %q", stdout)
	}
	if _, err := config.Load(out); err != nil {
		t.Fatalf("written file does not validate: %v", err)
	}
	if !strings.Contains(stderr, "no --node given") || !strings.Contains(stderr, "wrote "+out) {
		t.Errorf("stderr:\n%s", stderr)
	}
	// A second run must not replace the file without --force.
	if _, _, err := runImport(t, "haproxy", seedCfg, "--out", out); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite without --force: err = %v", err)
	}
	if _, _, err := runImport(t, "haproxy", seedCfg, "--out", out, "--force"); err != nil {
		t.Errorf("overwrite with --force: %v", err)
	}
}

func TestImportHAProxyErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	if err := os.WriteFile(bad, []byte("backend be\n  server s1 cp1.lan:6443 check\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runImport(t, "haproxy", bad)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("err = %v, want exit status 1", err)
	}
	if stdout != "" || !strings.Contains(stderr, bad+":2: server s1:") {
		t.Errorf("stdout %q, stderr:\n%s", stdout, stderr)
	}
	if _, _, err := runImport(t, "haproxy", seedCfg, "--node", "lb1"); err == nil {
		t.Error("a malformed --node was accepted")
	}
	if _, _, err := runImport(t, "haproxy", filepath.Join(t.TempDir(), "missing.cfg")); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestImportHAProxyWithKeepalived(t *testing.T) {
	ka := filepath.Join(t.TempDir(), "keepalived.conf")
	conf := "vrrp_instance VI_1 {\n  interface ens18\n  priority 150\n  nopreempt\n  unicast_src_ip 192.168.66.151\n  authentication {\n    auth_pass hunter22\n  }\n  virtual_ipaddress {\n    192.168.66.160/25\n  }\n}\n"
	if err := os.WriteFile(ka, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"haproxy", seedCfg, "--keepalived", ka, "--node", "lb1=192.168.66.151", "--node", "lb2=192.168.66.152"}
	stdout, stderr, err := runImport(t, args...)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	cfg, err := config.Parse([]byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VIPs[0]; got.Address.String() != "192.168.66.160/25" || got.Interface != "ens18" {
		t.Errorf("vip = %s on %s, want keepalived's 192.168.66.160/25 on ens18", got.Address, got.Interface)
	}
	if cfg.Cluster.Policy != config.Sticky || cfg.Cluster.Nodes[0].Priority != 150 {
		t.Errorf("policy %s, lb1 priority %d; want sticky, 150", cfg.Cluster.Policy, cfg.Cluster.Nodes[0].Priority)
	}
	if !strings.Contains(stderr, ka+":6: dropped, no effect: authentication") || strings.Contains(stdout+stderr, "hunter22") {
		t.Errorf("keepalived warnings wrong or leak the password:\n%s", stderr)
	}

	// An explicit --vip-interface beats keepalived's.
	stdout, _, err = runImport(t, append(args, "--vip-interface", "bond0")...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = config.Parse([]byte(stdout)); err != nil || cfg.VIPs[0].Interface != "bond0" {
		t.Errorf("vip interface with --vip-interface bond0: %v, %+v", err, cfg)
	}
}

// The imported file, stats section included, passes halb check as it is
// written: only the files it names are missing, which check warns about.
func TestImportHAProxyOutputPassesCheck(t *testing.T) {
	out := filepath.Join(t.TempDir(), "halb.yaml")
	if _, stderr, err := runImport(t, "haproxy", seedCfg, "--node", "lb1=192.168.66.151", "--node", "lb2=192.168.66.152", "--out", out); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"check", "--config", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("halb check exit %d:\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "stats.password_file") {
		t.Errorf("check did not look for the stats logins file:\n%s", stderr.String())
	}
}

// --define gives .if conditions the environment HAProxy runs with, so a
// server kept behind defined(NAME) is imported only when NAME is set.
func TestImportHAProxyDefine(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	text := "frontend fe\n  mode tcp\n  bind 10.1.1.10:6443\n  default_backend be\n" +
		"backend be\n  mode tcp\n  server a 10.1.1.1:6443 check\n" +
		".if defined(HALB_EXTRA)\n  server b 10.1.1.2:6443 check\n.endif\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	servers := func(args ...string) (int, string) {
		t.Helper()
		stdout, stderr, err := runImport(t, append([]string{"haproxy", cfg}, args...)...)
		if err != nil {
			t.Fatalf("import %v: %v\n%s", args, err, stderr)
		}
		c, err := config.Parse([]byte(stdout))
		if err != nil {
			t.Fatal(err)
		}
		return len(c.Backends[0].Servers), stderr
	}
	if n, stderr := servers(); n != 1 || !strings.Contains(stderr, "--define HALB_EXTRA=VALUE") {
		t.Errorf("without --define: %d servers, want 1, and a hint naming --define:\n%s", n, stderr)
	}
	if n, stderr := servers("--define", "HALB_EXTRA=1"); n != 2 || strings.Contains(stderr, "taken as undefined") {
		t.Errorf("with --define HALB_EXTRA=1: %d servers, want 2:\n%s", n, stderr)
	}
	if _, _, err := runImport(t, "haproxy", cfg, "--define", "=x"); err == nil || !strings.Contains(err.Error(), "NAME=VALUE") {
		t.Errorf("--define =x: err = %v, want NAME=VALUE", err)
	}
}
