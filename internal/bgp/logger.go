package bgp

import (
	"context"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger adapts GoBGP's logger to slog. GoBGP logs every peer event at
// Info and that would drown halb's own lines, so its Info becomes Debug:
// the Speaker logs session changes itself. Fatal and Panic never exit or
// panic here; halb decides what an error means.
type gobgpLogger struct {
	log *slog.Logger
}

func (l gobgpLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		attrs = append(attrs, k, v)
	}
	l.log.Log(context.Background(), level, msg, attrs...)
}

func (l gobgpLogger) Panic(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l gobgpLogger) Fatal(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l gobgpLogger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l gobgpLogger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l gobgpLogger) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelDebug, msg, f) }
func (l gobgpLogger) Debug(msg string, f gobgplog.Fields) { l.emit(slog.LevelDebug-4, msg, f) }

// SetLevel is ignored: the slog handler's level decides.
func (l gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells GoBGP whether to build debug messages at all.
func (l gobgpLogger) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug-4) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
