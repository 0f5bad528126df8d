// Package netnsrun runs a function on an OS thread switched into a
// network namespace and back, for the labs and tests that make sockets
// in namespaces they built. Test tooling; never linked into halb.
package netnsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs f on a thread switched into the named network namespace and
// switches it back; sockets f makes stay in that namespace, so the caller
// can use them from anywhere. A thread that cannot switch back stays
// locked, and the runtime discards it instead of reusing it in the wrong
// namespace.
func Do[T any](ns string, f func() (T, error)) (T, error) {
	var zero T
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("get own namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer func() { _ = target.Close() }()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	v, err := f()
	if netns.Set(orig) == nil {
		runtime.UnlockOSThread()
	}
	return v, err
}
