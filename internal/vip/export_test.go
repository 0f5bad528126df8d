package vip

import "time"

// Hooks for the external tests in package vip_test, which use the fakes of
// viptest (an internal test could not import viptest: viptest imports vip).

// SetBackoff shortens the retry backoff so failure tests run quickly.
func (a *Announcer) SetBackoff(lo, hi time.Duration) { a.backoffMin, a.backoffMax = lo, hi }

// Barrier is closed once Run has completed a step begun after the call.
func (a *Announcer) Barrier() <-chan struct{} { return a.barrier() }

// ForeignQuiet is how long the announcer waits after another host's
// announcement before answering it.
func (a *Announcer) ForeignQuiet() time.Duration { return a.foreignQuiet() }
