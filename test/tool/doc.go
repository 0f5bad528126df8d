// Package tool runs halb's helper commands (halb-lab, halb-bench,
// halb-bench-failover): a cobra root stopped by SIGINT/SIGTERM, with
// their shared error printing and exit statuses.
package tool
