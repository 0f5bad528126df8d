// Package benchresult merges one part of a benchmark run into the day's results file.
package benchresult
