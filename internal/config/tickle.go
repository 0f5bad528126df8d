package config

import (
	"fmt"
	"time"
)

// DefaultTickleRate is tickle.DefaultRate (config does not import the
// packet code): 10 000 connections tickled in 200 ms.
const DefaultTickleRate = 50_000

// MaxTickleRate bounds vips[].tickle_rate: a million 60-byte packets a
// second is already more than a gigabit link carries.
const MaxTickleRate = 1_000_000

// MaxTickleSpread bounds vips[].tickle_spread: a client on Go's default
// keep-alive learns of a dead connection within about 15 s by itself, so
// spreading the resets over longer only makes the tickles pointless.
const MaxTickleSpread = 10 * time.Second

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
		// 0, the default: every client told as fast as the rate allows
		// (docs/tickle.md, "Spreading the resets").
		vips[i].TickleSpread = v.duration(p+".tickle_spread", r.TickleSpread, 0, 0)
		if d := vips[i].TickleSpread; d > MaxTickleSpread {
			v.fail(p+".tickle_spread", "%s is too long: at most %s", d, MaxTickleSpread)
		}
	}
}
