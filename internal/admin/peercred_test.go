package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/test/support"
)

func TestAccessRules(t *testing.T) {
	a := access{uid: 999, gid: 50, group: "halbadm", groupsOf: func(uid int) ([]int, error) {
		switch uid {
		case 1001:
			return []int{100, 50}, nil
		case 1002:
			return []int{100}, nil
		}
		return nil, errors.New("unknown user")
	}}
	for _, tt := range []struct {
		name string
		p    peer
		ok   bool
	}{
		{"root", peer{uid: 0, gid: 0}, true},
		{"halb's own user", peer{uid: 999, gid: 999}, true},
		{"primary group is the admin group", peer{uid: 1003, gid: 50}, true},
		{"member through the group database", peer{uid: 1001, gid: 100}, true},
		{"other user", peer{uid: 1002, gid: 100}, false},
		{"unknown user", peer{uid: 4242, gid: 4242}, false},
		{"no credentials", peer{err: errors.New("boom")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			why := a.allows(tt.p)
			if (why == "") != tt.ok {
				t.Fatalf("allows(%+v) = %q, want allowed=%v", tt.p, why, tt.ok)
			}
			if !tt.ok && tt.p.err == nil && !strings.Contains(why, "admin group halbadm (gid 50)") {
				t.Fatalf("refusal %q does not name the admin group", why)
			}
		})
	}
}

const helperEnv = "HALB_ADMIN_PEERCRED_SOCKET"

// TestPeerCredHelper is not a test: TestAdminSocketRefusesOtherUsers runs
// the test binary as another user with helperEnv set, and this function
// then makes one request and prints "STATUS body".
func TestPeerCredHelper(t *testing.T) {
	sock := os.Getenv(helperEnv)
	if sock == "" {
		t.Skip("helper process for TestAdminSocketRefusesOtherUsers")
	}
	code, body := raw(t, sock, http.MethodPost, "/v1/maintenance", `{"on": true}`)
	fmt.Printf("STATUS %d %s\n", code, strings.Join(strings.Fields(string(body)), " "))
}

// TestAdminSocketRefusesOtherUsers runs a client as uid 65534 against the
// admin socket: refused with 403 and a log line unless it is in the admin
// group. The socket file is made world-writable on purpose, so that the
// refusal shown is the daemon's own check, not the file's mode.
func TestAdminSocketRefusesOtherUsers(t *testing.T) {
	support.RequireRoot(t, "run a client as another uid")
	const nobody = 65534
	nogroup, err := user.LookupGroupId(strconv.Itoa(nobody))
	if err != nil {
		t.Skipf("no group with gid %d here: %v", nobody, err)
	}
	// A directory every user can enter, holding a copy of this test binary
	// (go test's own build directory is private) and the sockets.
	dir, err := os.MkdirTemp("", "hp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "admin.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	client := func(t *testing.T, sock string, gid uint32) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-test.run=^TestPeerCredHelper$")
		cmd.Env = append(os.Environ(), helperEnv+"="+sock)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %d: %v\n%s", nobody, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(line, "STATUS "); ok {
				code, body, _ := strings.Cut(rest, " ")
				n, _ := strconv.Atoi(code)
				return n, body
			}
		}
		t.Fatalf("client as uid %d printed no status:\n%s", nobody, out)
		return 0, ""
	}
	serveAs := func(t *testing.T, name, group string) (string, *fakeController, *support.Log) {
		t.Helper()
		sock := filepath.Join(dir, name+".sock")
		logs := &support.Log{}
		r := startLogging(t, sock, group, Snapshot{}, slog.New(slog.NewTextHandler(logs, nil)))
		if err := os.Chmod(sock, 0o666); err != nil {
			t.Fatal(err)
		}
		return sock, r.ctl, logs
	}

	t.Run("outside the group", func(t *testing.T) {
		sock, ctl, logs := serveAs(t, "root", "") // admin group: the daemon's own (root's)
		code, body := client(t, sock, nobody)
		if code != http.StatusForbidden || !strings.Contains(body, "uid 65534 is not root") {
			t.Fatalf("uid 65534 got %d %s, want 403 saying who it is", code, body)
		}
		if len(ctl.maintenance) != 0 {
			t.Fatal("the refused request reached the controller")
		}
		if l := logs.String(); !strings.Contains(l, "admin API refused a local client") || !strings.Contains(l, "uid=65534") {
			t.Fatalf("no log line naming the refused uid:\n%s", l)
		}
	})
	t.Run("in the group", func(t *testing.T) {
		sock, ctl, logs := serveAs(t, "grp", nogroup.Name)
		code, body := client(t, sock, nobody)
		if code != http.StatusOK {
			t.Fatalf("uid 65534 in group %s got %d %s, want 200", nogroup.Name, code, body)
		}
		if len(ctl.maintenance) != 1 {
			t.Fatalf("the allowed request did not reach the controller: %v", ctl.maintenance)
		}
		if strings.Contains(logs.String(), "refused") {
			t.Fatalf("an allowed client was logged as refused:\n%s", logs.String())
		}
	})
}
