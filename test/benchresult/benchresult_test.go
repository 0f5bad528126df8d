package benchresult

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestMergeKeepsOtherParts(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC)
	m := Machine{Kernel: "k", CPUs: 2}
	if _, err := Merge(dir, "proxy", m, map[string]int{"conns": 1}, now); err != nil {
		t.Fatal(err)
	}
	path, err := Merge(dir, "failover", m, map[string]int{"reps": 10}, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "2026-11-28.json"); path != want {
		t.Fatalf("path %s, want %s", path, want)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["proxy"]["conns"] != 1.0 || doc["failover"]["reps"] != 10.0 || doc["machine"]["kernel"] != "k" {
		t.Fatalf("merged file lost a part: %s", b)
	}
}

func TestMergeRefusesForeignFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if err := os.WriteFile(Path(dir, now), []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(dir, "proxy", Machine{}, 1, now); err == nil {
		t.Fatal("merge over a foreign file succeeded")
	}
	if b, _ := os.ReadFile(Path(dir, now)); string(b) != "not json" {
		t.Fatalf("foreign file changed: %q", b)
	}
	if _, err := Merge(dir, "machine", Machine{}, 1, now); err == nil {
		t.Fatal("reserved key accepted")
	}
}
