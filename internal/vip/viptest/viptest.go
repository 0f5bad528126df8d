package viptest

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"halb/internal/vip"
)

// Link operations, as recorded by Link.
const (
	OpReplace = "replace"
	OpDel     = "del"
	OpList    = "list"
)

// LinkCall is one call to a Link.
type LinkCall struct {
	Op     string // OpReplace, OpDel or OpList
	Ifname string
	Addr   vip.Addr // zero for OpList
	Err    error
}

// Link is an in-memory vip.Link for tests. Addresses with a lifetime
// expire by the wall clock, like the kernel's; Drop and Expire make
// addresses vanish at once. It is safe for concurrent use.
type Link struct {
	mu     sync.Mutex
	addrs  map[string][]fakeAddr
	errs   map[string]error
	calls  []LinkCall
	notify chan LinkCall
}

type fakeAddr struct {
	vip.Addr
	expires time.Time // zero: never
}

// NewLink returns an empty Link.
func NewLink() *Link {
	return &Link{
		addrs:  map[string][]fakeAddr{},
		errs:   map[string]error{},
		notify: make(chan LinkCall, 1024),
	}
}

// AddrReplace implements vip.Link.
func (f *Link) AddrReplace(ifname string, a vip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.errs[OpReplace]
	if err == nil {
		f.expireLocked(ifname)
		fa := fakeAddr{Addr: a}
		if a.ValidLifetime > 0 {
			fa.expires = time.Now().Add(a.ValidLifetime)
		}
		list := f.addrs[ifname]
		if i := slices.IndexFunc(list, func(x fakeAddr) bool { return x.Prefix == a.Prefix }); i >= 0 {
			// Like the kernel, a replace keeps the existing label.
			fa.Label = list[i].Label
			list[i] = fa
		} else {
			list = append(list, fa)
		}
		f.addrs[ifname] = list
	}
	f.recordLocked(LinkCall{Op: OpReplace, Ifname: ifname, Addr: a, Err: err})
	return err
}

// AddrDel implements vip.Link.
func (f *Link) AddrDel(ifname string, a vip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.errs[OpDel]
	if err == nil {
		f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool {
			return x.Prefix == a.Prefix && (a.Label == "" || a.Label == x.Label)
		})
	}
	f.recordLocked(LinkCall{Op: OpDel, Ifname: ifname, Addr: a, Err: err})
	return err
}

// AddrList implements vip.Link.
func (f *Link) AddrList(ifname string) ([]vip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.errs[OpList]
	f.recordLocked(LinkCall{Op: OpList, Ifname: ifname, Err: err})
	if err != nil {
		return nil, err
	}
	return f.addrsLocked(ifname), nil
}

// Set replaces the addresses of ifname, e.g. to plant a stale or a
// foreign VIP before a test starts.
func (f *Link) Set(ifname string, addrs ...vip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	list := make([]fakeAddr, 0, len(addrs))
	now := time.Now()
	for _, a := range addrs {
		fa := fakeAddr{Addr: a}
		if a.ValidLifetime > 0 {
			fa.expires = now.Add(a.ValidLifetime)
		}
		list = append(list, fa)
	}
	f.addrs[ifname] = list
}

// Addrs returns the addresses ifname has now, with their remaining lifetimes.
func (f *Link) Addrs(ifname string) []vip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrsLocked(ifname)
}

// Has reports whether ifname has exactly p now.
func (f *Link) Has(ifname string, p netip.Prefix) bool {
	return slices.ContainsFunc(f.Addrs(ifname), func(a vip.Addr) bool { return a.Prefix == p })
}

// Drop removes p from ifname behind the user's back, as when someone
// deletes the primary address and the kernel takes the secondaries along.
func (f *Link) Drop(ifname string, p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool { return x.Prefix == p })
}

// Expire removes every address of ifname that has a finite lifetime, as
// the kernel does once a crashed holder stops refreshing them.
func (f *Link) Expire(ifname string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool { return !x.expires.IsZero() })
}

// SetErr makes every later call of op (OpReplace, OpDel, OpList) fail
// with err; nil clears it.
func (f *Link) SetErr(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[op] = err
}

// Calls returns every call so far, oldest first.
func (f *Link) Calls() []LinkCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Count returns how many calls of op were made.
func (f *Link) Count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Notify receives each call as it is made; calls are dropped when nobody
// reads and 1024 are queued.
func (f *Link) Notify() <-chan LinkCall { return f.notify }

func (f *Link) recordLocked(c LinkCall) {
	f.calls = append(f.calls, c)
	select {
	case f.notify <- c:
	default:
	}
}

func (f *Link) expireLocked(ifname string) {
	now := time.Now()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool {
		return !x.expires.IsZero() && !now.Before(x.expires)
	})
}

func (f *Link) addrsLocked(ifname string) []vip.Addr {
	f.expireLocked(ifname)
	now := time.Now()
	out := make([]vip.Addr, 0, len(f.addrs[ifname]))
	for _, fa := range f.addrs[ifname] {
		a := fa.Addr
		if !fa.expires.IsZero() {
			a.ValidLifetime = fa.expires.Sub(now)
		}
		out = append(out, a)
	}
	return out
}

// Announcement is one call to a GARP.
type Announcement struct {
	Ifname string
	IP     netip.Addr
	Err    error
}

// GARP records announcements instead of sending them. It is safe for
// concurrent use.
type GARP struct {
	mu     sync.Mutex
	calls  []Announcement
	err    error
	hook   func(n int)
	notify chan Announcement
}

// NewGARP returns a GARP that succeeds.
func NewGARP() *GARP {
	return &GARP{notify: make(chan Announcement, 1024)}
}

// Announce implements vip.GARPSender.
func (f *GARP) Announce(ifname string, ip netip.Addr) error {
	f.mu.Lock()
	c := Announcement{Ifname: ifname, IP: ip, Err: f.err}
	f.calls = append(f.calls, c)
	n, hook := len(f.calls), f.hook
	select {
	case f.notify <- c:
	default:
	}
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return c.Err
}

// SetErr makes later announcements fail with err; nil clears it.
func (f *GARP) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// SetHook makes each later Announce call hook with the number of calls so
// far (1 for the first), on the caller's goroutine, after recording it.
func (f *GARP) SetHook(hook func(n int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = hook
}

// Announcements returns every announcement so far, oldest first.
func (f *GARP) Announcements() []Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Count returns how many announcements were made.
func (f *GARP) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// Notify receives each announcement as it is made; they are dropped when
// nobody reads and 1024 are queued.
func (f *GARP) Notify() <-chan Announcement { return f.notify }
