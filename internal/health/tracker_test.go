package health

import (
	"strings"
	"testing"
)

// replay feeds ops to a tracker: '+' a success, '-' a failure, 'F' a
// ForceDown. It returns the state after each op ('U' up, 'D' down) and
// where the state changed ('*') or not ('.').
func replay(t *testing.T, tr *Tracker, ops string) (states, changes string) {
	t.Helper()
	var s, c strings.Builder
	for _, op := range ops {
		var changed bool
		switch op {
		case '+':
			changed = tr.Observe(true)
		case '-':
			changed = tr.Observe(false)
		case 'F':
			changed = tr.ForceDown()
		default:
			t.Fatalf("bad op %q", op)
		}
		if !tr.Known() {
			t.Fatalf("after %q: state still unknown", op)
		}
		if tr.Up() {
			s.WriteByte('U')
		} else {
			s.WriteByte('D')
		}
		if changed {
			c.WriteByte('*')
		} else {
			c.WriteByte('.')
		}
	}
	return s.String(), c.String()
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		ops        string
		states     string
		changes    string
	}{
		{"first success decides up at once", 2, 3, "+", "U", "*"},
		{"first failure decides down at once", 2, 3, "-", "D", "*"},
		{"fall 3 needs three failures in a row", 2, 3, "+---", "UUUD", "*..*"},
		{"a success resets the fall count", 2, 3, "+--+--+---", "UUUUUUUUUD", "*........*"},
		{"rise 2 needs two successes in a row", 2, 3, "-++", "DDU", "*.*"},
		{"a failure resets the rise count", 2, 3, "-+-+-++", "DDDDDDU", "*.....*"},
		{"down then up again", 2, 3, "+---++", "UUUDDU", "*..*.*"},
		{"force down needs rise successes", 2, 3, "+F+++", "UDDUU", "**.*."},
		{"force down from unknown decides down", 2, 3, "F++", "DDU", "*.*"},
		{"force down while down is no change", 2, 3, "-F", "DD", "*."},
		{"force down resets a rise in progress", 2, 3, "-+F+", "DDDD", "*..."},
		{"flapping from up never flips", 2, 3, "+-+-+-+-+-+-", "UUUUUUUUUUUU", "*..........."},
		{"flapping from down never flips", 2, 3, "-+-+-+-+-+-+", "DDDDDDDDDDDD", "*..........."},
		{"rise and fall of 1 follow every result", 1, 1, "+-+-", "UDUD", "****"},
		{"values below 1 act as 1", 0, -5, "+-+", "UDU", "***"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(tt.rise, tt.fall)
			states, changes := replay(t, &tr, tt.ops)
			if states != tt.states || changes != tt.changes {
				t.Fatalf("ops %s: states %s changes %s, want states %s changes %s",
					tt.ops, states, changes, tt.states, tt.changes)
			}
		})
	}
}

func TestTrackerUnknownUntilFirstResult(t *testing.T) {
	tr := NewTracker(2, 3)
	if tr.Known() || tr.Up() {
		t.Fatalf("new tracker: known=%v up=%v, want unknown and not up", tr.Known(), tr.Up())
	}
}
