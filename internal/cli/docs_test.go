package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteDocs(t *testing.T) {
	man, completions := filepath.Join(t.TempDir(), "man"), filepath.Join(t.TempDir(), "completions")
	t.Setenv("SOURCE_DATE_EPOCH", "1796601600") // 2026-12-07
	if err := WriteDocs(man, completions); err != nil {
		t.Fatalf("WriteDocs: %v", err)
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		return string(b)
	}
	root := read(filepath.Join(man, "halb.1"))
	if want := `.TH "HALB" "1" "Dec 2026" "halb ` + buildVersion() + `" "halb manual"`; !strings.Contains(root, want) {
		t.Fatalf("halb.1 has no header %q:\n%s", want, root[:min(len(root), 300)])
	}
	// One page per command, each listing what --help lists.
	for page, want := range map[string]string{
		"halb-run.1":            "HALB_NODE",
		"halb-check.1":          "[FILE | --config FILE]",
		"halb-keygen.1":         "--group",
		"halb-server-drain.1":   "k8s_controlplane/talos-lon-cp01",
		"halb-import-haproxy.1": "--out",
	} {
		if text := read(filepath.Join(man, page)); !strings.Contains(text, want) {
			t.Errorf("%s does not mention %q", page, want)
		}
	}
	if strings.Contains(root, "Auto generated") {
		t.Error("halb.1 carries cobra's auto-generated tag")
	}
	for name, want := range map[string]string{
		"halb":      "__start_halb",
		"_halb":     "#compdef halb",
		"halb.fish": "complete -c halb",
	} {
		if text := read(filepath.Join(completions, name)); !strings.Contains(text, want) {
			t.Errorf("completion %s does not contain %q", name, want)
		}
	}
	// man-db, where installed, must render the page without warnings.
	if _, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command("man", "--warnings", "-l", filepath.Join(man, "halb-run.1"))
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "MANWIDTH=80")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "halb-run") || strings.Contains(string(out), "warning") {
			t.Fatalf("man -l halb-run.1: %v\n%s", err, out)
		}
	}
}
