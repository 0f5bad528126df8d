package version

import (
	"runtime/debug"
	"strings"
)

// stamped and stampedCommit are set by the linker (-ldflags "-X
// halb/internal/version.stamped=…") in `make build` and `make deb`. They are
// halb's only package variables: -X can only set a package-level string, and
// nothing writes them at run time.
var stamped, stampedCommit string

// String is halb's version without a leading "v", e.g. "0.2.0" on a tagged
// commit or "0.2.0+3.g1a2b3c4" three commits after it: the same string the
// .deb carries as its version.
func String() string {
	info, _ := debug.ReadBuildInfo()
	return resolve(stamped, info)
}

// Commit is the VCS revision the binary was built from (12 hex digits,
// "-dirty" appended for a modified tree): stamped by the Makefile, else as
// the Go toolchain recorded it, "" when it recorded none (go run,
// -buildvcs=false, no .git).
func Commit() string {
	if stampedCommit != "" {
		return stampedCommit
	}
	info, _ := debug.ReadBuildInfo()
	return commit(info)
}

// resolve prefers the linker-stamped version and falls back to the main
// module's version from the build info: a tag or pseudo-version when plain
// `go build` ran in a git checkout, "(devel)" otherwise.
func resolve(stamped string, info *debug.BuildInfo) string {
	if v := strings.TrimSpace(stamped); v != "" {
		return strings.TrimPrefix(v, "v")
	}
	if info == nil || info.Main.Version == "" {
		return "unknown"
	}
	if info.Main.Version == "(devel)" {
		if c := commit(info); c != "" {
			return "devel+" + c
		}
		return "devel"
	}
	return strings.TrimPrefix(info.Main.Version, "v")
}

func commit(info *debug.BuildInfo) string {
	if info == nil {
		return ""
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev + dirty
}
