package adminstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"halb/internal/smallfile"
)

// version is the file format's; a newer one is refused rather than misread.
const version = 1

// maxSize bounds the file: a few hundred servers fit in far less.
const maxSize = 1 << 20

// State is what the file holds. Servers lists only those not enabled.
type State struct {
	Version     int      `json:"version"`
	Maintenance bool     `json:"maintenance,omitempty"`
	Servers     []Server `json:"servers,omitempty"`
}

// Server is one server's admin state in one backend.
type Server struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Address string `json:"address,omitempty"` // for the reader; matching is by name
	State   string `json:"state"`             // "drain" or "disabled"
}

// Load reads path. A missing file is the empty state and no error: the
// first start, or nothing was ever changed.
func Load(path string) (State, error) {
	b, err := smallfile.Read(path, maxSize)
	if errors.Is(err, os.ErrNotExist) {
		return State{Version: version}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read admin state file: %w", err)
	}
	var s State
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("admin state file %s is corrupt (%w): delete it or fix it; halb rewrites it on the next change", path, err)
	}
	if s.Version != version {
		return State{}, fmt.Errorf("admin state file %s: version %d, this halb reads version %d", path, s.Version, version)
	}
	for i, sv := range s.Servers {
		if sv.Backend == "" || sv.Server == "" {
			return State{}, fmt.Errorf("admin state file %s: servers[%d]: backend and server are required", path, i)
		}
		if sv.State != "drain" && sv.State != "disabled" {
			return State{}, fmt.Errorf("admin state file %s: servers[%d].state %q: want drain or disabled", path, i, sv.State)
		}
	}
	return s, nil
}

// Save writes s to path atomically: a temporary file in the same
// directory, synced, then renamed over path, so a crash leaves the old
// file or the new one, never half of one.
func Save(path string, s State) error {
	s.Version = version
	s.Servers = slices.Clone(s.Servers) // sorted for stable diffs, not the caller's
	slices.SortFunc(s.Servers, func(a, b Server) int {
		return strings.Compare(a.Backend+"\x00"+a.Server, b.Backend+"\x00"+b.Server)
	})
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode admin state: %w", err)
	}
	if err := smallfile.WriteAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("write admin state file %s: %w", path, err)
	}
	return nil
}
