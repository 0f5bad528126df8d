// Package vip holds or releases one virtual IP on an interface: it adds the address with a short, refreshed lifetime and announces it with gratuitous ARP (or unsolicited neighbour advertisements for IPv6).
package vip
