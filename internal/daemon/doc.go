// Package daemon wires halb's parts together — checks, pools, listeners, gossip, election loop, VIPs, reload, drills, keys and the operator API — and runs them under one context, each concern in its own type.
package daemon
