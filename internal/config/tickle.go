package config

import "fmt"

// DefaultTickleRate is tickle.DefaultRate (config does not import the
// packet code): 10 000 connections tickled in 200 ms.
const DefaultTickleRate = 50_000

// MaxTickleRate bounds vips[].tickle_rate: a million 60-byte packets a
// second is already more than a gigabit link carries.
const MaxTickleRate = 1_000_000

// tickles reads each VIP's tickle settings; tickling is on unless turned
// off, since a moved VIP otherwise leaves idle clients blind for as long
// as their keep-alive (docs/tickle.md).
func (v *validator) tickles(raws []rawVIP, vips []VIP) {
	for i, r := range raws {
		if i >= len(vips) {
			break
		}
		p := fmt.Sprintf("vips[%d]", i)
		vips[i].Tickle = r.Tickle == nil || *r.Tickle
		// Hand-off is on unless turned off: a planned move then resets
		// nothing (docs/handoff.md).
		vips[i].Handoff = r.Handoff == nil || *r.Handoff
		vips[i].TickleRate = intOr(r.TickleRate, DefaultTickleRate)
		if n := vips[i].TickleRate; n < 1 || n > MaxTickleRate {
			v.fail(p+".tickle_rate", "%d: want 1 to %d packets per second", n, MaxTickleRate)
		}
	}
}
