package adminstate

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	want := State{Version: version, Maintenance: true, Servers: []Server{
		{Backend: "talos", Server: "cp1", Address: "10.0.0.1:50000", State: "drain"},
		{Backend: "k8s", Server: "cp1", Address: "10.0.0.1:6443", State: "disabled"},
	}}
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Saved sorted by backend, then server.
	want.Servers[0], want.Servers[1] = want.Servers[1], want.Servers[0]
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %+v, want %+v", got, want)
	}
	// Overwriting leaves no temporary file behind.
	if err := Save(path, State{}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files after two saves, want 1", len(ents))
	}
}

func TestMissingIsEmpty(t *testing.T) {
	s, err := Load(filepath.Join(t.TempDir(), "none.json"))
	if err != nil || s.Maintenance || len(s.Servers) != 0 {
		t.Fatalf("Load(missing) = %+v, %v; want empty, nil", s, err)
	}
}

func TestCorruptNamesFileAndProblem(t *testing.T) {
	for name, body := range map[string]string{
		"truncated":   `{"version":1,"servers":[{"backend":"k8s"`,
		"bad state":   `{"version":1,"servers":[{"backend":"k8s","server":"cp1","state":"gone"}]}`,
		"newer":       `{"version":9}`,
		"unknown key": `{"version":1,"maintenence":true}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load = %v, want an error naming %s", err, path)
			}
		})
	}
}

func TestSaveIntoMissingDirectoryFails(t *testing.T) {
	err := Save(filepath.Join(t.TempDir(), "no", "state.json"), State{})
	if err == nil || !strings.Contains(err.Error(), "state.json") {
		t.Fatalf("Save = %v, want an error naming the file", err)
	}
}
