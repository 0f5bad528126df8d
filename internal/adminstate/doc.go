// Package adminstate keeps the operator's admin states (server drain and
// disable, node maintenance) in a small JSON file, written atomically, so
// they survive a restart as HAProxy's server-state-file does.
package adminstate
