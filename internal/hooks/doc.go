// Package hooks runs the operator's commands on events (hooks: in the
// config) off the daemon's hot paths: per VIP in event order, each with a
// timeout, in bounded queues that drop rather than block.
package hooks
