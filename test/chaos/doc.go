// Package chaos plans fault-injection runs from a seed and judges what a run observed against halb's invariants.
package chaos
