// Package healthtest holds a manually advanced fake of the health
// package's Clock seam, for tests that drive probe and witness schedules
// without sleeping. It never ships in the halb binary.
package healthtest

import "halb/internal/health"

// The fake must keep satisfying the seam it stands in for.
var _ health.Clock = (*Clock)(nil)
