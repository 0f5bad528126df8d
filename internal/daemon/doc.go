// Package daemon wires halb's parts together — checks, pools, listeners, gossip, election and VIPs — and runs them under one context.
package daemon
