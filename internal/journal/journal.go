package journal

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IsStream reports whether f is the journal stream that systemd named in
// JOURNAL_STREAM ("DEVICE:INODE", decimal), as systemd.exec(5) documents:
// the variable is inherited by children whose stderr may point elsewhere,
// so only a matching device and inode count.
func IsStream(f *os.File, journalStream string) bool {
	devStr, inoStr, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false
	}
	dev, err := strconv.ParseUint(devStr, 10, 64)
	if err != nil {
		return false
	}
	ino, err := strconv.ParseUint(inoStr, 10, 64)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// Priority is the sd-daemon(3) prefix for a slog level: levels between the
// named ones take the priority of the one below them.
func Priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>" // LOG_ERR
	case l >= slog.LevelWarn:
		return "<4>" // LOG_WARNING
	case l >= slog.LevelInfo:
		return "<6>" // LOG_INFO
	default:
		return "<7>" // LOG_DEBUG
	}
}

// Handler writes each record as one line of an inner handler (slog's text
// or JSON handler), prefixed with its priority and without a time.
type Handler struct {
	inner slog.Handler
	out   *output
}

// output is shared by a Handler and those derived from it with WithAttrs
// and WithGroup: the inner handlers format into buf under mu, so the prefix
// and the line reach w in one write, and lines never interleave.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

// bufWriter is what the inner handlers write to: the shared buffer, only
// ever while Handle holds the lock.
type bufWriter struct{ o *output }

func (b bufWriter) Write(p []byte) (int, error) { return b.o.buf.Write(p) }

// NewHandler returns a Handler writing to w. newInner builds the handler
// that formats a line, given the writer it must write to; it is called once.
func NewHandler(w io.Writer, newInner func(io.Writer) slog.Handler) *Handler {
	o := &output{w: w}
	return &Handler{inner: newInner(bufWriter{o}), out: o}
}

// Enabled reports whether the inner handler logs at level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle writes r as one prefixed line. The inner handler leaves out the
// time because it is zeroed: journald stamps every line itself.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	o := h.out
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Reset()
	o.buf.WriteString(Priority(r.Level))
	if err := h.inner.Handle(ctx, r); err != nil {
		return fmt.Errorf("format log record for the journal: %w", err)
	}
	if _, err := o.w.Write(o.buf.Bytes()); err != nil {
		return fmt.Errorf("write log record to the journal: %w", err)
	}
	return nil
}

// WithAttrs returns a Handler whose lines carry attrs, sharing h's output.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs), out: h.out}
}

// WithGroup returns a Handler that nests later attributes under name,
// sharing h's output.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), out: h.out}
}
