// Package election computes, as a pure function of the alive members and their gossiped state, which node owns a VIP.
package election
