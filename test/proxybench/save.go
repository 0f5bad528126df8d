package proxybench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"halb/test/benchresult"
)

// Save merges the summary under "proxy" into dir/<date>.json and writes
// the markdown table to dir/<date>-proxy.md; it returns both paths.
func (s *Summary) Save(dir, commit string, now time.Time) (string, string, error) {
	m := benchresult.ReadMachine(commit)
	js, err := benchresult.Merge(dir, "proxy", m, s, now)
	if err != nil {
		return "", "", err
	}
	md := strings.TrimSuffix(benchresult.Path(dir, now), ".json") + "-proxy.md"
	var b strings.Builder
	fmt.Fprintf(&b, "# Proxy benchmark %s\n\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), kernel %s, %s, commit %s.\n\n", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, orUnknown(m.Commit))
	if err := s.WriteMarkdown(&b); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(md, []byte(b.String()), 0o644); err != nil {
		return "", "", fmt.Errorf("write %s: %w", filepath.Base(md), err)
	}
	return js, md, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
