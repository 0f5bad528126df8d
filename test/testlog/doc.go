// Package testlog holds what tests use to read the logs of code running in
// other goroutines.
package testlog
