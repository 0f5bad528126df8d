// Package journal adapts halb's slog output to systemd's journal: when
// standard error is the journal's stream (JOURNAL_STREAM), each line starts
// with its syslog priority (<3> error … <7> debug) and carries no timestamp
// of its own, so `journalctl -p warning` filters by level and journald's own
// time is the only one.
package journal
