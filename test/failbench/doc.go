// Package failbench measures, in a namespace lab, how long clients of the VIP are cut off when an LB fails or hands over — for halb and for keepalived + HAProxy — and counts VIP moves that no failure caused.
package failbench
