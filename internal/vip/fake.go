package vip

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Link operations, as recorded by FakeLink.
const (
	OpReplace = "replace"
	OpDel     = "del"
	OpList    = "list"
)

// LinkCall is one call to a FakeLink.
type LinkCall struct {
	Op     string // OpReplace, OpDel or OpList
	Ifname string
	Addr   Addr // zero for OpList
	Err    error
}

// FakeLink is an in-memory Link for tests. Addresses with a lifetime
// expire by the wall clock, like the kernel's; Drop and Expire make
// addresses vanish at once. It is safe for concurrent use.
type FakeLink struct {
	mu     sync.Mutex
	addrs  map[string][]fakeAddr
	errs   map[string]error
	calls  []LinkCall
	notify chan LinkCall
}

type fakeAddr struct {
	Addr
	expires time.Time // zero: never
}

// NewFakeLink returns an empty FakeLink.
func NewFakeLink() *FakeLink {
	return &FakeLink{
		addrs:  map[string][]fakeAddr{},
		errs:   map[string]error{},
		notify: make(chan LinkCall, 1024),
	}
}

// AddrReplace implements Link.
func (f *FakeLink) AddrReplace(ifname string, a Addr) error {
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

// AddrDel implements Link.
func (f *FakeLink) AddrDel(ifname string, a Addr) error {
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

// AddrList implements Link.
func (f *FakeLink) AddrList(ifname string) ([]Addr, error) {
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
func (f *FakeLink) Set(ifname string, addrs ...Addr) {
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
func (f *FakeLink) Addrs(ifname string) []Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrsLocked(ifname)
}

// Has reports whether ifname has exactly p now.
func (f *FakeLink) Has(ifname string, p netip.Prefix) bool {
	return slices.ContainsFunc(f.Addrs(ifname), func(a Addr) bool { return a.Prefix == p })
}

// Drop removes p from ifname behind the user's back, as when someone
// deletes the primary address and the kernel takes the secondaries along.
func (f *FakeLink) Drop(ifname string, p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool { return x.Prefix == p })
}

// Expire removes every address of ifname that has a finite lifetime, as
// the kernel does once a crashed holder stops refreshing them.
func (f *FakeLink) Expire(ifname string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool { return !x.expires.IsZero() })
}

// SetErr makes every later call of op (OpReplace, OpDel, OpList) fail
// with err; nil clears it.
func (f *FakeLink) SetErr(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[op] = err
}

// Calls returns every call so far, oldest first.
func (f *FakeLink) Calls() []LinkCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Count returns how many calls of op were made.
func (f *FakeLink) Count(op string) int {
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
func (f *FakeLink) Notify() <-chan LinkCall { return f.notify }

func (f *FakeLink) recordLocked(c LinkCall) {
	f.calls = append(f.calls, c)
	select {
	case f.notify <- c:
	default:
	}
}

func (f *FakeLink) expireLocked(ifname string) {
	now := time.Now()
	f.addrs[ifname] = slices.DeleteFunc(f.addrs[ifname], func(x fakeAddr) bool {
		return !x.expires.IsZero() && !now.Before(x.expires)
	})
}

func (f *FakeLink) addrsLocked(ifname string) []Addr {
	f.expireLocked(ifname)
	now := time.Now()
	out := make([]Addr, 0, len(f.addrs[ifname]))
	for _, fa := range f.addrs[ifname] {
		a := fa.Addr
		if !fa.expires.IsZero() {
			a.ValidLifetime = fa.expires.Sub(now)
		}
		out = append(out, a)
	}
	return out
}

// Announcement is one call to a FakeGARP.
type Announcement struct {
	Ifname string
	IP     netip.Addr
	Err    error
}

// FakeGARP records announcements instead of sending them. It is safe for
// concurrent use.
type FakeGARP struct {
	mu     sync.Mutex
	calls  []Announcement
	err    error
	hook   func(n int)
	notify chan Announcement
}

// NewFakeGARP returns a FakeGARP that succeeds.
func NewFakeGARP() *FakeGARP {
	return &FakeGARP{notify: make(chan Announcement, 1024)}
}

// Announce implements GARPSender.
func (f *FakeGARP) Announce(ifname string, ip netip.Addr) error {
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
func (f *FakeGARP) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// SetHook makes each later Announce call hook with the number of calls so
// far (1 for the first), on the caller's goroutine, after recording it.
func (f *FakeGARP) SetHook(hook func(n int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = hook
}

// Announcements returns every announcement so far, oldest first.
func (f *FakeGARP) Announcements() []Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Count returns how many announcements were made.
func (f *FakeGARP) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// Notify receives each announcement as it is made; they are dropped when
// nobody reads and 1024 are queued.
func (f *FakeGARP) Notify() <-chan Announcement { return f.notify }
