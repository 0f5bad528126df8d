// Package freebind lets a listener bind an address this host does not hold yet, such as a VIP before the election hands it over.
package freebind
