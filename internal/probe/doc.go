// Package probe measures how reachable a TCP, TLS or HTTPS endpoint is by opening a fresh connection every few milliseconds and recording every gap in service.
package probe
