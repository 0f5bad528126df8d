// Package haproxy translates an HAProxy configuration in TCP mode, optionally with a keepalived VRRP instance, into a halb config file and warns about everything it cannot carry over.
package haproxy
