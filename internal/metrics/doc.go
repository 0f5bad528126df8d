// Package metrics exposes halb's state as Prometheus metrics from a private registry.
package metrics
