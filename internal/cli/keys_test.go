package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"halb/internal/admin"
	"halb/internal/keyring"
)

// fakeKeys is a daemon whose keyring lives in memory.
type fakeKeys struct {
	*fakeDaemon
	mu   sync.Mutex
	keys [][]byte
}

func (f *fakeKeys) ring() admin.Keyring {
	kr := admin.Keyring{File: "/var/lib/halb/gossip.keyring"}
	for i, k := range f.keys {
		kr.Keys = append(kr.Keys, admin.KeyInfo{ID: keyring.ID(k), Primary: i == 0})
	}
	return kr
}

func (f *fakeKeys) edit(ref admin.KeyRef, op func([][]byte, []byte) ([][]byte, error)) (admin.Keyring, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := ref.Key
	if ref.ID != "" {
		var err error
		if key, err = keyring.Find(f.keys, ref.ID); err != nil {
			return admin.Keyring{}, fmt.Errorf("%w: %w", err, admin.ErrNotFound)
		}
	}
	next, err := op(f.keys, key)
	if err != nil {
		return admin.Keyring{}, fmt.Errorf("%w: %w", err, admin.ErrConflict)
	}
	f.keys = next
	return f.ring(), nil
}

func (f *fakeKeys) Keys() (admin.Keyring, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring(), nil
}

func (f *fakeKeys) InstallKey(k []byte) (admin.Keyring, error) {
	return f.edit(admin.KeyRef{Key: k}, keyring.Install)
}
func (f *fakeKeys) UseKey(r admin.KeyRef) (admin.Keyring, error)    { return f.edit(r, keyring.Use) }
func (f *fakeKeys) RemoveKey(r admin.KeyRef) (admin.Keyring, error) { return f.edit(r, keyring.Remove) }

func TestKeysCommands(t *testing.T) {
	checkLeaks(t)
	oldKey, newKey := bytes.Repeat([]byte{'o'}, 32), bytes.Repeat([]byte{'n'}, 32)
	d := &fakeKeys{fakeDaemon: &fakeDaemon{snap: snapshot(false)}, keys: [][]byte{oldKey}}
	sock := serve(t, d)
	dir := t.TempDir()
	newFile := filepath.Join(dir, "new.key")
	if err := os.WriteFile(newFile, []byte(keyring.Encode(newKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFile := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(badFile, []byte("swordfish\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	oldID, newID := keyring.ID(oldKey), keyring.ID(newKey)
	for _, tt := range []struct {
		args     []string
		code     int
		says     string // on stdout when code is 0, else on stderr
		mustNot  string
		keysThen int
	}{
		{[]string{"list"}, 0, oldID + "  yes", "", 1},
		{[]string{"install", "--key-file", badFile}, 1, "line 1: malformed gossip key: not base64", "swordfish", 1},
		{[]string{"install", "--key-file", newFile}, 0, "installed " + newID, keyring.Encode(newKey), 2},
		{[]string{"remove", oldID}, 1, "make another key primary first", "", 2},
		{[]string{"use", newID}, 0, "now encrypting with " + newID, "", 2},
		{[]string{"use"}, 1, "use: missing ID | --key-file FILE", "", 2},
		{[]string{"remove", "--key-file", newFile, oldID}, 1, "not both", "", 2},
		{[]string{"remove", oldID}, 0, "removed " + oldID, "", 1},
		{[]string{"list", "-o", "json"}, 0, `"id": "` + newID + `"`, "", 1},
	} {
		name := strings.Join(tt.args, " ")
		out, errOut, code := run(ctx, newKeysCmd(), append(tt.args, "--socket", sock)...)
		got := out
		if tt.code != 0 {
			got = errOut
		}
		if code != tt.code || !strings.Contains(got, tt.says) {
			t.Errorf("keys %s: exit %d, stdout %q, stderr %q; want exit %d saying %q", name, code, out, errOut, tt.code, tt.says)
		}
		if tt.mustNot != "" && strings.Contains(out+errOut, tt.mustNot) {
			t.Errorf("keys %s prints key material: %q %q", name, out, errOut)
		}
		if kr, _ := d.Keys(); len(kr.Keys) != tt.keysThen {
			t.Errorf("after keys %s: %d keys, want %d", name, len(kr.Keys), tt.keysThen)
		}
	}
}

func TestCheckReadsGossipKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	ring := filepath.Join(dir, "gossip.keyring")
	cfg := filepath.Join(dir, "halb.yaml")
	doc := fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: cp}
backends:
  - name: cp
    servers: [{name: cp1, address: "127.0.0.2:6443"}]
cluster:
  key_file: %s
  keyring_file: %s
  nodes:
    - {name: lb1, address: 127.0.0.1}
`, key, ring)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := keyring.Encode(bytes.Repeat([]byte{'k'}, 32)) + "\n"
	write(key, good)
	if out, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg); code != 0 || strings.Contains(errOut, "warning") {
		t.Fatalf("good key, no keyring yet: exit %d: %s %s", code, out, errOut)
	}
	// A key file others can read is a warning; the key itself is fine.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg); code != 0 ||
		!strings.Contains(errOut, "warning: cluster.key_file") || !strings.Contains(errOut, "mode 0644") || !strings.Contains(errOut, key) {
		t.Fatalf("world-readable key file: exit %d, stderr %q; want a warning naming the field, file and mode", code, errOut)
	}
	write(ring, good+keyring.Encode([]byte("sixteen byte key"))+"\n"+"0123\n")
	_, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "cluster.keyring_file: gossip key file "+ring+": line 3: malformed gossip key") {
		t.Fatalf("broken keyring file: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(errOut, "0123") {
		t.Fatalf("check echoes the broken line: %q", errOut)
	}
}
