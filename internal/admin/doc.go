// Package admin serves halb's local JSON admin API on a unix socket, and
// offers the client and human rendering that `halb status` uses.
package admin
