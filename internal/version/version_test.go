package version

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(version string, settings ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{Main: debug.Module{Path: "halb", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return info
	}
	tests := []struct {
		name    string
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"stamped tag wins over build info", "0.2.0", vcs("v0.1.0"), "0.2.0"},
		{"stamped with a v", "v0.2.0", nil, "0.2.0"},
		{"stamped after a tag", "0.2.0+3.g1a2b3c4", vcs("(devel)"), "0.2.0+3.g1a2b3c4"},
		{"go build on a tag", "", vcs("v0.2.0"), "0.2.0"},
		{"go build after a tag", "", vcs("v0.2.1-0.20261207015509-1a2b3c4d5e6f+dirty"), "0.2.1-0.20261207015509-1a2b3c4d5e6f+dirty"},
		{"devel with a revision", "", vcs("(devel)", "vcs.revision", "1a2b3c4d5e6f7a8b", "vcs.modified", "true"), "devel+1a2b3c4d5e6f-dirty"},
		{"devel without vcs", "", vcs("(devel)"), "devel"},
		{"no build info", "", nil, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolve(tt.stamped, tt.info); got != tt.want {
				t.Fatalf("resolve(%q) = %q, want %q", tt.stamped, got, tt.want)
			}
		})
	}
}

func TestCommit(t *testing.T) {
	info := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"},
		{Key: "vcs.modified", Value: "false"},
	}}
	if got := commit(info); got != "0123456789ab" {
		t.Fatalf("commit = %q, want 0123456789ab", got)
	}
	if got := commit(nil); got != "" {
		t.Fatalf("commit(nil) = %q, want empty", got)
	}
}
