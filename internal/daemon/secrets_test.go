package daemon

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/keyring"
	"halb/internal/vip/viptest"
	"halb/test/support"
)

// TestLogsHoldNoSecrets drives what handles secrets — failed and good
// stats logins up to the rate limit, gossip key rotation, reloads of
// configs with bad passwords and keys, starts with broken key files — and
// checks that no password, bcrypt hash or gossip key (in any encoding)
// reaches the log, at debug level, or an error shown to the operator.
func TestLogsHoldNoSecrets(t *testing.T) {
	const password = "correct-horse-battery-staple"
	const wrongPassword = "Tr0ub4dor&3-wrong"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(keyring.Encode(oldKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statsPort := freePort(t, "127.0.0.1")
	statsSection := fmt.Sprintf("stats:\n  bind: 127.0.0.1:%d\n  users:\n    - {name: admin, password_hash: %q}\n", statsPort, hash)
	logs := &support.Log{}
	d, c, _ := keyNode(t, dir, "keyring_file: "+filepath.Join(dir, "gossip.keyring"), statsSection, logs)
	// Run starts the stats server after keyNode returns; logging in
	// before it listens would be refused (a flake seen under load).
	logs.WaitFor(t, 10*time.Second, `msg="stats listening"`)
	ctx := context.Background()
	var shown []string // errors an operator would see

	// Stats logins: wrong ones until the limit answers 429, then good ones
	// from another source.
	login := func(user, pass, from string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/status.json", statsPort), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, pass)
		tr := &http.Transport{DisableKeepAlives: true}
		if from != "" {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			tr.DialContext = d.DialContext
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("stats request: %v", err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	limited := false
	for range 10 {
		if code := login("admin", wrongPassword, ""); code == http.StatusTooManyRequests {
			limited = true
			break
		} else if code != http.StatusUnauthorized {
			t.Fatalf("wrong password: status %d", code)
		}
	}
	if !limited {
		t.Fatal("10 wrong passwords in a row were never rate limited")
	}
	if code := login("ghost", password, ""); code != http.StatusTooManyRequests {
		t.Fatalf("a limited source still had its credentials checked: status %d", code)
	}
	if code := login("admin", password, "127.0.0.9"); code != http.StatusOK {
		t.Fatalf("good password from another source: status %d", code)
	}
	if !strings.Contains(logs.String(), "stats login failed") {
		t.Fatal("failed logins were not logged at all")
	}

	// Key rotation, including refused attempts.
	for _, step := range []struct {
		op  string
		req admin.KeyRequest
	}{
		{"install", admin.KeyRequest{Key: base64.StdEncoding.EncodeToString([]byte("too short"))}},
		{"install", admin.KeyRequest{Key: keyring.Encode(newKey)}},
		{"use", admin.KeyRequest{Key: keyring.Encode(newKey)}},
		{"remove", admin.KeyRequest{Key: keyring.Encode(newKey)}},
		{"remove", admin.KeyRequest{Key: keyring.Encode(oldKey)}},
	} {
		if _, err := c.ChangeKey(ctx, step.op, step.req); err != nil {
			shown = append(shown, err.Error())
		}
	}

	// Reloads of configs that put a plaintext password where a hash goes,
	// and of one whose stats hash changed (restart-only).
	cfgPath := d.opts.ConfigPath
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		strings.Replace(string(orig), string(hash), password, 1),
		strings.Replace(string(orig), string(hash), string(hash[:len(hash)-2])+"xx", 1),
	} {
		if err := os.WriteFile(cfgPath, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.Reload(); err == nil {
			t.Fatal("a reload with a changed stats password was accepted")
		} else {
			shown = append(shown, err.Error())
		}
	}

	// Starting with broken key files: the key text is not echoed.
	for _, text := range []string{keyring.Encode(oldKey)[:20], password, keyring.Encode(oldKey) + "\n" + keyring.Encode(oldKey)} {
		bad := filepath.Join(dir, "bad.key")
		if err := os.WriteFile(bad, []byte(text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			shown = append(shown, err.Error())
			continue
		}
		cfg.Cluster.KeyFile, cfg.Cluster.KeyringFile = bad, ""
		if _, err := New(cfg, Options{NodeName: "a", Link: viptest.NewLink(), GARP: viptest.NewGARP()}); err == nil {
			t.Fatalf("a broken key file was accepted")
		} else {
			shown = append(shown, err.Error())
		}
	}

	secrets := map[string]string{
		"password":              password,
		"wrong password":        wrongPassword,
		"bcrypt hash":           string(hash),
		"bcrypt hash body":      string(hash[7:]),
		"basic auth header":     base64.StdEncoding.EncodeToString([]byte("admin:" + password)),
		"wrong basic auth":      base64.StdEncoding.EncodeToString([]byte("admin:" + wrongPassword)),
		"old gossip key":        keyring.Encode(oldKey),
		"old gossip key prefix": keyring.Encode(oldKey)[:20],
		"new gossip key":        keyring.Encode(newKey),
		"old gossip key raw":    string(oldKey),
		"new gossip key raw":    string(newKey),
		"new gossip key hex":    fmt.Sprintf("%x", newKey),
	}
	text := logs.String()
	if len(text) < 1000 {
		t.Fatalf("suspiciously little log output (%d bytes): is the logger wired?", len(text))
	}
	// Key changes are audited with the uid the kernel reported.
	if audit := fmt.Sprintf("op=install uid=%d ", os.Getuid()); !strings.Contains(text, audit) {
		t.Errorf("no audit line with %q for the key install", audit)
	}
	for name, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the log contains the %s", name)
		}
		for _, e := range shown {
			if strings.Contains(e, s) {
				t.Errorf("an error shown to the operator contains the %s: %s", name, e)
			}
		}
	}
	if len(shown) < 6 {
		t.Fatalf("only %d refusals were collected: %q", len(shown), shown)
	}
}
