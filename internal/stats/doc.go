// Package stats serves the password-protected HTML dashboard, /status.json and /metrics over HTTP.
package stats
