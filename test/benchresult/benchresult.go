package benchresult

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a run happened, so numbers are never read without it.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go_version"`
	Commit    string `json:"commit,omitempty"`
}

// ReadMachine reads the machine's description; missing parts stay empty.
func ReadMachine(commit string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Commit: commit}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Path is the results file for the day of now: dir/YYYY-MM-DD.json.
func Path(dir string, now time.Time) string {
	return filepath.Join(dir, now.UTC().Format("2006-01-02")+".json")
}

// Merge stores part under key in the day's results file, keeping the other
// parts already there, and records the machine. Parts of one `make bench`
// (proxy, failover, soak) run as separate processes and meet in this file.
func Merge(dir, key string, m Machine, part any, now time.Time) (string, error) {
	if key == "" || key == "machine" {
		return "", fmt.Errorf("result key %q is reserved or empty", key)
	}
	path := Path(dir, now)
	doc := map[string]json.RawMessage{}
	switch b, err := os.ReadFile(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("read %s: %w", path, err)
	default:
		if err := json.Unmarshal(b, &doc); err != nil {
			return "", fmt.Errorf("%s is not a results file (%w); move it away", path, err)
		}
	}
	for k, v := range map[string]any{key: part, "machine": m} {
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("encode %s: %w", k, err)
		}
		doc[k] = b
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	// Write then rename, so an interrupted run never leaves half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("rename %s: %w", tmp, err)
	}
	return path, nil
}
