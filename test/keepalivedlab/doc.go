// Package keepalivedlab runs the reference stack halb replaces — keepalived (VRRP) moving the VIP and HAProxy proxying to the control planes — on the LB hosts of a namespace lab.
package keepalivedlab
