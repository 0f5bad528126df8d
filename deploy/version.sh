#!/bin/sh
# Print halb's version for the binary and the .deb, from `git describe` of
# the newest v* tag, without the v:
#   v0.2.0                      -> 0.2.0
#   v0.2.0-3-g1a2b3c4           -> 0.2.0+3.g1a2b3c4        (3 commits after)
#   v0.2.0-rc.1                 -> 0.2.0~rc.1              (sorts before 0.2.0)
#   v0.2.0 with a modified tree -> 0.2.0+dirty
#   no tag                      -> 0.0.0+g1a2b3c4
# Debian compares "+" after and "~" before the plain version, so every build
# after a tag sorts above it and a release candidate below the release.
# Usage: deploy/version.sh [DESCRIBE]   (DESCRIBE: test a git describe output)
set -eu

if [ $# -gt 0 ]; then
	d=$1
else
	d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null) ||
		d=v0.0.0-0-g$(git describe --always --dirty 2>/dev/null || echo unknown)
fi

dirty=
case $d in *-dirty)
	dirty=dirty
	d=${d%-dirty}
	;;
esac
# The -N-gHASH suffix git adds after a tag, if any.
since=$(printf '%s\n' "$d" | sed -n 's/^.*-\([0-9][0-9]*\)-\(g[0-9a-f]*\)$/\1.\2/p')
if [ -n "$since" ]; then
	d=$(printf '%s\n' "$d" | sed 's/-[0-9][0-9]*-g[0-9a-f]*$//')
fi
# What remains is the tag: v1.2.3 or v1.2.3-rc.1.
v=$(printf '%s\n' "${d#v}" | sed 's/-/~/')
case $since in 0.*) since=${since#0.} ;; esac # no tag: just the hash

extra=$since
[ -n "$dirty" ] && extra=${extra:+$extra.}$dirty
printf '%s%s\n' "$v" "${extra:++$extra}"
