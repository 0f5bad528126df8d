package cli

import (
	"io"
	"log/slog"
	"os"

	"halb/internal/journal"
)

// logHandler builds the handler behind halb run's logger: log.format's text
// or JSON lines, and when standard error is journald's stream, the same
// lines with a syslog priority prefix and without a timestamp, so
// `journalctl -p warning -u halb` works and each line has one time.
func logHandler(w io.Writer, format string, opts *slog.HandlerOptions) slog.Handler {
	newInner := func(w io.Writer) slog.Handler {
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	if f, ok := w.(*os.File); ok && journal.IsStream(f, os.Getenv("JOURNAL_STREAM")) {
		return journal.NewHandler(w, newInner)
	}
	return newInner(w)
}
