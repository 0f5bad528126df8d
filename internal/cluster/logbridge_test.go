package cluster

import (
	"log"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/test/support"
)

func TestLogBridgeLevels(t *testing.T) {
	rec := support.NewLog()
	l := log.New(logBridge{log: rec.Logger()}, "", 0)
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	l.Printf("[INFO] memberlist: Suspect lb2 has failed, no acks received")
	l.Printf("[WARN] memberlist: Was able to connect to lb2 over TCP but UDP probes failed")
	l.Printf("[ERR] memberlist: Failed to send ping: boom")
	l.Printf("no prefix at all")
	type line struct {
		Level slog.Level
		Msg   string
	}
	var got []line
	for _, r := range rec.Records() {
		got = append(got, line{r.Level, r.Message})
	}
	want := []line{
		{slog.LevelDebug, "memberlist: Stream connection from=127.0.0.1:1"},
		{slog.LevelInfo, "memberlist: Suspect lb2 has failed, no acks received"},
		{slog.LevelWarn, "memberlist: Was able to connect to lb2 over TCP but UDP probes failed"},
		{slog.LevelError, "memberlist: Failed to send ping: boom"},
		{slog.LevelInfo, "memberlist: no prefix at all"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("log lines (-want +got):\n%s", diff)
	}
}
