// Package health probes backend servers (tcp, tls, http, https) and turns results into up/down states with rise and fall.
package health
