package cli

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRaiseFileLimitChild is the process TestRaiseFileLimitFromLowSoftLimit
// runs with a soft limit below the hard one; alone it skips.
func TestRaiseFileLimitChild(t *testing.T) {
	maxconn, err := strconv.Atoi(os.Getenv("HALB_TEST_RAISE_MAXCONN"))
	if err != nil {
		t.Skip("the child process of TestRaiseFileLimitFromLowSoftLimit")
	}
	// Lowering the hard limit cannot be undone, hence a process of its own.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 1024, Max: 4096}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	raiseFileLimit(maxconn, slog.New(slog.NewTextHandler(&buf, nil)))
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LIMIT %d %d\nLOG %s\n", lim.Cur, lim.Max, strings.ReplaceAll(buf.String(), "\n", " "))
}

// Started with soft 1024 and hard 4096, halb raises the soft limit to 4096
// and warns, with the numbers, only when maxconn needs more than that: 6
// descriptors a connection (2 sockets, a splice pipe per direction) + 256.
func TestRaiseFileLimitFromLowSoftLimit(t *testing.T) {
	tests := []struct {
		maxconn int
		warn    string // "" : no warning
	}{
		{maxconn: 640},
		{maxconn: 700, warn: "maxconn=700 fds_needed=4456 fd_limit=4096 fds_per_conn=6"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.maxconn), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRaiseFileLimitChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("HALB_TEST_RAISE_MAXCONN=%d", tt.maxconn))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "LIMIT 4096 4096\n") {
				t.Errorf("soft limit not raised to the hard one:\n%s", out)
			}
			_, log, _ := strings.Cut(string(out), "LOG ")
			log, _, _ = strings.Cut(log, "\n")
			switch {
			case tt.warn == "" && strings.TrimSpace(log) != "":
				t.Errorf("warned although maxconn fits: %s", log)
			case tt.warn != "" && !strings.Contains(log, tt.warn):
				t.Errorf("warning %q, want one with %q", log, tt.warn)
			}
		})
	}
}
