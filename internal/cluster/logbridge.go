package cluster

import (
	"bytes"
	"context"
	"log/slog"
)

// logBridge turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level.
type logBridge struct {
	log *slog.Logger
}

func (w logBridge) Write(p []byte) (int, error) {
	n := len(p)
	line := bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	if rest, ok := bytes.CutPrefix(line, []byte("[")); ok {
		if tag, msg, ok := bytes.Cut(rest, []byte("]")); ok {
			switch string(tag) {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = bytes.TrimLeft(msg, " ")
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	w.log.Log(context.Background(), level, "memberlist: "+string(line))
	return n, nil
}
