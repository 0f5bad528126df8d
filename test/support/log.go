package support

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Log records log lines for tests that read what code running in other
// goroutines logged, and can wait until a line appears. Logger gives a
// *slog.Logger writing slog's text format ("level=INFO msg=... key=value")
// into it, at every level; as an io.Writer it also takes text from other
// handlers or from a child process's output. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	partial []byte   // an unterminated last line
	lines   []string // complete lines, oldest first
	records []slog.Record
	changed chan struct{}
}

// NewLog returns an empty Log.
func NewLog() *Log { return &Log{changed: make(chan struct{})} }

// Logger returns a logger writing every record, Debug and up, into l in
// slog's text format without the time, so lines are easy to match.
func (l *Log) Logger() *slog.Logger {
	return slog.New(recordingHandler{log: l, text: slog.NewTextHandler(l, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})})
}

// Records returns the records logged through Logger so far, oldest first,
// for tests that look at attributes by key. Attributes added with With are
// in the lines but not in the records.
func (l *Log) Records() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]slog.Record(nil), l.records...)
}

// recordingHandler keeps each record before formatting it as a line.
type recordingHandler struct {
	log  *Log
	text slog.Handler
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.log.mu.Lock()
	h.log.records = append(h.log.records, r.Clone())
	h.log.mu.Unlock()
	return h.text.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{log: h.log, text: h.text.WithAttrs(as)}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{log: h.log, text: h.text.WithGroup(name)}
}

// Write implements io.Writer, splitting p into lines.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	buf := append(l.partial, p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(buf[:i]))
		buf = buf[i+1:]
	}
	l.partial = append([]byte(nil), buf...)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, s := range l.lines {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	b.Write(l.partial)
	return b.String()
}

// Lines returns the complete lines so far, oldest first.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Count returns how many lines at level or above contain every one of
// parts. A line's level is read from its "level=" field; lines without one
// count as Info.
func (l *Log) Count(level slog.Level, parts ...string) int {
	n := 0
	for _, s := range l.Lines() {
		if lineLevel(s) >= level && containsAll(s, parts) {
			n++
		}
	}
	return n
}

// WaitFor waits until a line matching the regular expression pattern has
// been logged and returns the first such line; it fails t if none is
// within the given time, showing what was logged.
func (l *Log) WaitFor(t testing.TB, within time.Duration, pattern string) string {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Fatalf("log pattern %q: %v", pattern, err)
	}
	line, ok := l.await(within, func(lines []string) (string, bool) {
		for _, s := range lines {
			if re.MatchString(s) {
				return s, true
			}
		}
		return "", false
	})
	if !ok {
		t.Fatalf("no log line matching %q within %s; logged:\n%s", pattern, within, l.String())
	}
	return line
}

// WaitCount waits until at least n lines at level or above contain every
// one of parts, failing t if that does not happen within the given time.
func (l *Log) WaitCount(t testing.TB, within time.Duration, n int, level slog.Level, parts ...string) {
	t.Helper()
	_, ok := l.await(within, func([]string) (string, bool) { return "", l.Count(level, parts...) >= n })
	if !ok {
		t.Fatalf("fewer than %d log lines at %s with %q within %s; logged:\n%s", n, level, parts, within, l.String())
	}
}

// await re-checks match whenever a line is written, until it holds or the
// time is up.
func (l *Log) await(within time.Duration, match func([]string) (string, bool)) (string, bool) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		l.mu.Lock()
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		lines := append([]string(nil), l.lines...)
		l.mu.Unlock()
		if s, ok := match(lines); ok {
			return s, true
		}
		select {
		case <-changed:
		case <-timer.C:
			return match(l.Lines())
		}
	}
}

func lineLevel(s string) slog.Level {
	i := strings.Index(s, "level=")
	if i < 0 {
		return slog.LevelInfo
	}
	f := s[i+len("level="):]
	if j := strings.IndexByte(f, ' '); j >= 0 {
		f = f[:j]
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
