// Package haproxy translates an HAProxy configuration in TCP mode into a halb config file, warning about everything it cannot carry over.
package haproxy
