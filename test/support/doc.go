// Package support holds the scaffolding every package's tests share:
// waiting for a condition with a deadline, running a component in the
// background until the test ends, skipping (or failing) tests that need
// root, listeners bound on port 0, a log recorder tests can wait on, and a
// throwaway certificate authority. It is test tooling and never linked
// into the halb binary.
package support
