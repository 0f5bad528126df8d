// Package proxybench measures halb's proxy beside HAProxy and the direct path in a namespace lab and reports the figures as medians of per-repetition ratios.
package proxybench
