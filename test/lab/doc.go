// Package lab builds a throwaway network-namespace lab — LB hosts running halb, fake control planes, a client, joined by a bridge in its own namespace — and drives failures in it.
package lab
