package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"halb/internal/config"
)

// logTo logs one warning through newLogger into a file standing in for
// standard error and returns what was written.
func logTo(t *testing.T, f *os.File, format string) string {
	t.Helper()
	newLogger(f, config.Log{Level: "info", Format: format}).Warn("peer silent", "peer", "lb2")
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stderrFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestRunLogsForJournald(t *testing.T) {
	f, stream := stderrFile(t)
	t.Setenv("JOURNAL_STREAM", stream)
	got := logTo(t, f, "text")
	if want := "<4>level=WARN msg=\"peer silent\" peer=lb2\n"; got != want {
		t.Fatalf("under journald got %q, want %q", got, want)
	}
}

func TestRunLogsUnchangedOutsideJournald(t *testing.T) {
	for name, stream := range map[string]string{
		"unset": "",
		// Inherited from a parent whose stderr was the journal; ours is not.
		"another stream": "1:1",
	} {
		t.Run(name, func(t *testing.T) {
			f, _ := stderrFile(t)
			t.Setenv("JOURNAL_STREAM", stream)
			got := logTo(t, f, "json")
			if strings.HasPrefix(got, "<") || !strings.Contains(got, `"time":`) || !strings.Contains(got, `"level":"WARN"`) {
				t.Fatalf("outside journald got %q, want a plain JSON line with its time", got)
			}
		})
	}
}

func TestFatalErrorHasErrorPriorityUnderJournald(t *testing.T) {
	f, stream := stderrFile(t)
	t.Setenv("JOURNAL_STREAM", stream)
	if code := Main([]string{"run", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, os.Stdout, f); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "<3>halb: ") {
		t.Fatalf("error line %q, want it to start with <3>halb: ", b)
	}
}
