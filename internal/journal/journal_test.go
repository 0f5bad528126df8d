package journal

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func textLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(NewHandler(w, func(w io.Writer) slog.Handler {
		return slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	}))
}

func TestPriorityPrefixesAndNoTime(t *testing.T) {
	var buf bytes.Buffer
	log := textLogger(&buf, slog.LevelDebug).With("component", "vip")
	log.Debug("probe", "server", "cp1")
	log.Info("claimed", "vip", "192.0.2.10")
	log.Warn("peer silent")
	log.Error("bind failed", "err", "address in use")
	log.Log(t.Context(), slog.LevelWarn+2, "between warn and error")

	want := []string{
		`<7>level=DEBUG msg=probe component=vip server=cp1`,
		`<6>level=INFO msg=claimed component=vip vip=192.0.2.10`,
		`<4>level=WARN msg="peer silent" component=vip`,
		`<3>level=ERROR msg="bind failed" component=vip err="address in use"`,
		`<4>level=WARN+2 msg="between warn and error" component=vip`,
	}
	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestJSONAndGroups(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(&buf, func(w io.Writer) slog.Handler {
		return slog.NewJSONHandler(w, nil)
	}))
	log.WithGroup("peer").Warn("suspect", "name", "lb2")
	const want = `<4>{"level":"WARN","msg":"suspect","peer":{"name":"lb2"}}` + "\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
}

func TestLevelFilterIsTheInnerHandlers(t *testing.T) {
	var buf bytes.Buffer
	log := textLogger(&buf, slog.LevelInfo)
	log.Debug("hidden")
	if buf.Len() != 0 {
		t.Fatalf("debug record written at level info: %q", buf.String())
	}
}

// Lines written from many goroutines, through derived handlers, must stay
// whole: one prefix at the start of each line, never mid-line.
func TestConcurrentLinesStayWhole(t *testing.T) {
	var buf bytes.Buffer
	log := textLogger(&buf, slog.LevelDebug)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("g", g)
			for i := range 50 {
				l.Info("tick", "i", i)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("got %d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "<6>level=INFO msg=tick ") || strings.Count(l, "<6>") != 1 {
			t.Fatalf("mangled line %q", l)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteErrorIsReturned(t *testing.T) {
	h := NewHandler(failingWriter{}, func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) })
	var r slog.Record
	r.Message, r.Level = "x", slog.LevelInfo
	if err := h.Handle(t.Context(), r); err == nil {
		t.Fatal("Handle to a failing writer: nil error")
	}
}

func TestIsStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	tests := []struct {
		name, env string
		want      bool
	}{
		{"same device and inode", match, true},
		{"unset", "", false},
		{"other inode", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"other device", fmt.Sprintf("%d:%d", st.Dev+1, st.Ino), false},
		{"no colon", "12345", false},
		{"not numbers", "a:b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsStream(f, tt.env); got != tt.want {
				t.Fatalf("IsStream(%q) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}
