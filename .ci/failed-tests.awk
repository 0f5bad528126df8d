# Prints, for each top-level test go test -v reports as failed, its own
# output from its "=== RUN" on (subtests included, at most 400 lines
# each): what the integration target's filter leaves out, for a
# failure's post-mortem in the CI log.
# Usage: awk -f .ci/failed-tests.awk integration.log integration.log
function top(name) { sub(/\/.*/, "", name); return name }
FNR == NR {
	if ($1 == "---" && $2 == "FAIL:") failed[top($3)] = 1
	next
}
$1 == "===" && ($2 == "RUN" || $2 == "CONT") && top($3) != cur {
	cur = (top($3) in failed) ? top($3) : ""
	n = 0
}
cur != "" && n < 400 { if (n == 0) print "\n##### output of " cur; print; n++ }
