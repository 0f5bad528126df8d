package proxybench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// columns of a table: the figure, its unit, each target's median, then
// the ratios.
func (s *Summary) rows() [][]string {
	head := []string{"figure", "unit"}
	head = append(head, s.Targets...)
	var ratioCols []string
	for _, t := range s.Targets {
		if t != Direct {
			ratioCols = append(ratioCols, t)
			head = append(head, t+"/direct")
		}
	}
	head = append(head, "halb/haproxy")
	rows := [][]string{head}
	for _, f := range figures {
		if !s.measured(f.group) || !s.hasFigure(f.key) {
			continue
		}
		row := []string{f.label, f.unit}
		for _, t := range s.Targets {
			row = append(row, value(s.Median, t, f))
		}
		for _, t := range ratioCols {
			row = append(row, ratio(s.ToDirect, t, f.key))
		}
		row = append(row, ratio(s.ToHAProxy, Halb, f.key))
		rows = append(rows, row)
	}
	return rows
}

// hasFigure says whether any target has the figure (system calls only
// come with --perf).
func (s *Summary) hasFigure(key string) bool {
	for _, m := range s.Median {
		if _, ok := m[key]; ok {
			return true
		}
	}
	return false
}

func (s *Summary) measured(group string) bool {
	for _, g := range s.Groups {
		if g == group {
			return true
		}
	}
	return false
}

func value(m map[string]map[string]float64, t string, f figure) string {
	v, ok := m[t][f.key]
	if !ok {
		return "–"
	}
	switch f.unit {
	case "Gbit/s", "":
		if f.key == "idle_opened" {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.2f", v)
	case "KiB":
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func ratio(m map[string]map[string]float64, t, key string) string {
	v, ok := m[t][key]
	if !ok || key == "idle_opened" {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

// header says how the numbers were made, in one line.
func (s *Summary) header() string {
	mode := "full"
	if s.Quick {
		mode = "quick"
	}
	h := fmt.Sprintf("proxy benchmark (%s): medians of %d repetitions, %gs per measurement, %d idle connections asked; ratios are medians of per-repetition ratios",
		mode, s.Reps, s.Seconds, s.IdleConns)
	if len(s.Load) > 0 {
		loads := make([]string, len(s.Load))
		for i, l := range s.Load {
			loads[i] = fmt.Sprintf("%.1f", l)
		}
		h += "; load average at each repetition's start and at the end: " + strings.Join(loads, ", ")
	}
	return h
}

// WriteText writes the table for a terminal.
func (s *Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, s.header())
	for _, r := range s.rows() {
		_, _ = fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_, _ = fmt.Fprintln(tw)
	for _, g := range s.Goals {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\n", g.Figure, g.Want, g.Got, metWord(g.Met))
	}
	return tw.Flush()
}

// WriteMarkdown writes the table and the goals as markdown.
func (s *Summary) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s.\n\n", s.header())
	for i, r := range s.rows() {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r, " | "))
		if i == 0 {
			fmt.Fprintf(&b, "|%s\n", strings.Repeat("---|", len(r)))
		}
	}
	if len(s.Goals) > 0 {
		b.WriteString("\n| target for halb | want | measured | |\n|---|---|---|---|\n")
		for _, g := range s.Goals {
			fmt.Fprintf(&b, "| %s | %s | %.2f | %s |\n", g.Figure, g.Want, g.Got, metWord(g.Met))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}
