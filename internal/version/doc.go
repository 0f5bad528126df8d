// Package version is halb's one version string: stamped at build time from
// `git describe` by the Makefile, else taken from the Go module's build
// information, and used by `halb version`, `halb --version`, the gossiped
// node state, the status views and the .deb.
package version
