package cli

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// runKeygen runs halb keygen and returns its exit status and standard error,
// which includes the error Main would print.
func runKeygen(t *testing.T, args ...string) (code int, stderr string) {
	_, stderr, code = run(t.Context(), newKeygenCmd(), args...)
	return code, stderr
}

func fileModeGid(t *testing.T, path string) (os.FileMode, uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid
}

func TestKeygenGroupReadable(t *testing.T) {
	// Our own primary group: chgrp to it needs no privilege.
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("no name for gid %d: %v", os.Getgid(), err)
	}
	path := filepath.Join(t.TempDir(), "gossip.key")
	if code, stderr := runKeygen(t, "--out", path, "--group", g.Name); code != 0 {
		t.Fatalf("keygen --group %s: exit %d: %s", g.Name, code, stderr)
	}
	mode, gid := fileModeGid(t, path)
	if mode != 0o640 || int(gid) != os.Getgid() {
		t.Fatalf("key file mode %#o gid %d, want 0640 gid %d", mode, gid, os.Getgid())
	}
	key, _ := os.ReadFile(path)
	if len(strings.TrimSpace(string(key))) != 44 {
		t.Fatalf("key %q is not 32 bytes of base64", key)
	}
}

func TestKeygenOwnerOnlyByDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runKeygen(t, "--out", path, "--force"); code != 0 {
		t.Fatalf("keygen --force: exit %d: %s", code, stderr)
	}
	// A replaced world-readable file must not stay world-readable.
	if mode, _ := fileModeGid(t, path); mode != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", mode)
	}
}

func TestKeygenRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown group", []string{"--out", filepath.Join(dir, "k1"), "--group", "no-such-group-halb-test"}, "--group no-such-group-halb-test"},
		{"group with stdout", []string{"--out", "-", "--group", "halb"}, "--group applies to a file"},
		{"-o is no longer the output file", []string{"-o", filepath.Join(dir, "k2")}, "unknown shorthand flag: 'o'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := runKeygen(t, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("keygen %v: exit %d, stderr %q; want exit 1 and an error containing %q", tt.args, code, stderr, tt.wantErr)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused keygen left %d file(s) behind", len(entries))
	}
}
