// Package soak holds long resource soaks of the real halb binary on loopback; they build only with -tags soak (make soak-conns), never in make test.
package soak
