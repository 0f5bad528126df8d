package config

// DefaultPassiveFall is how many counted connect failures in a row take a
// server down between checks. More than one, so a burst of timeouts from
// one moment of overload does not take a healthy server out; few, so a
// server that really died costs only a few clients one retry each.
const DefaultPassiveFall = 3

// passiveFall validates backends[].passive_fall.
func (v *validator) passiveFall(path string, raw *int) int {
	n := intOr(raw, DefaultPassiveFall)
	if n < 1 {
		v.fail(path, "%d: must be 1 or more (1 marks a server down at its first failed connect)", n)
	}
	return n
}
