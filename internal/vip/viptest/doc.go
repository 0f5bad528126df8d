// Package viptest holds in-memory fakes of the vip package's seams to the
// operating system, a Link and a GARPSender that record every call, for the
// tests of vip and of the packages that drive announcers. It never ships in
// the halb binary.
package viptest

import "halb/internal/vip"

// The fakes must keep satisfying the seams they stand in for.
var (
	_ vip.Link       = (*Link)(nil)
	_ vip.GARPSender = (*GARP)(nil)
)
