// Package integration runs real halb processes in a namespace lab (build tag integration; needs root) and measures what a client sees when LB hosts fail.
package integration
