package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"halb/internal/keyring"
)

// A gossip key file others can read gets a warning from check; the
// config still passes, as the key itself is fine.
func TestCheckWarnsOfExposedKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	cfg := filepath.Join(dir, "halb.yaml")
	doc := fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: cp}
backends:
  - name: cp
    servers: [{name: cp1, address: "127.0.0.2:6443"}]
cluster:
  key_file: %s
  nodes:
    - {name: lb1, address: 127.0.0.1}
`, key)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte(keyring.Encode(bytes.Repeat([]byte{'k'}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg); code != 0 || strings.Contains(errOut, "warning") {
		t.Fatalf("private key file: exit %d, stderr %q", code, errOut)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(context.Background(), newCheckCmd(), "--config", cfg)
	if code != 0 || !strings.Contains(errOut, "warning: cluster.key_file") || !strings.Contains(errOut, "mode 0644") || !strings.Contains(errOut, key) {
		t.Fatalf("world-readable key file: exit %d, stderr %q; want a warning naming the field, file and mode", code, errOut)
	}
}

// A mistyped --log-level is an error naming the levels, not info.
func TestRunRefusesUnknownLogLevel(t *testing.T) {
	_, errOut, code := run(context.Background(), newRunCmd(), "--config", "/nonexistent/halb.yaml", "--log-level", "bogus")
	if code != 1 || !strings.Contains(errOut, `--log-level "bogus"`) || !strings.Contains(errOut, "debug, info, warn or error") {
		t.Fatalf("exit %d, stderr %q; want the valid levels named", code, errOut)
	}
}
