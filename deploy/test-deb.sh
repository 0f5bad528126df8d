#!/bin/bash
# Build the halb .deb, install it on this machine, check what an operator
# relies on, then purge it and remove what the test added. Needs root and
# dpkg; refuses to run where halb is already installed or configured, so it
# never touches a real installation. Never starts the daemon: the packaged
# config names the seed's addresses, which must not be used outside a lab.
#
#   sudo bash deploy/test-deb.sh [path/to/halb_*.deb]
# Without an argument it runs `make deb` and tests the package for this
# machine's architecture.
set -euo pipefail

cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (installs a package)"
command -v dpkg >/dev/null || fail "dpkg not found: Debian-based systems only"
# Under pipefail a reader that stops early (grep -q, head) can fail the
# pipeline with the writer's SIGPIPE: readers here consume all their input.
if dpkg-query -W -f='${Status}' halb 2>/dev/null | grep 'installed\|config-files' >/dev/null; then
	fail "package halb is already on this machine; not touching it"
fi
[ ! -e /etc/halb ] || fail "/etc/halb exists; not touching it"
[ ! -e /etc/default/halb ] || fail "/etc/default/halb exists; not touching it"
had_user=no
getent passwd halb >/dev/null && had_user=yes
had_group=no
getent group halb >/dev/null && had_group=yes

deb=${1:-}
if [ -z "$deb" ]; then
	rm -f bin/halb_*.deb
	make deb DEB_ARCHES="$(dpkg --print-architecture)" >/dev/null
	deb=$(ls bin/halb_*_"$(dpkg --print-architecture)".deb)
fi
[ -f "$deb" ] || fail "no package at $deb"

cleanup() {
	if dpkg-query -W halb >/dev/null 2>&1; then
		dpkg --purge halb >/dev/null 2>&1 || echo "cleanup: dpkg --purge halb failed" >&2
	fi
	rm -rf /etc/halb /etc/default/halb
	if [ "$had_user" = no ] && getent passwd halb >/dev/null; then
		userdel halb || echo "cleanup: userdel halb failed" >&2
	fi
	if [ "$had_group" = no ] && getent group halb >/dev/null; then
		groupdel halb || echo "cleanup: groupdel halb failed" >&2
	fi
}
trap cleanup EXIT

# mode_owner PATH → "750 root:halb"
mode_owner() { stat -c '%a %U:%G' "$1"; }

# --- install ---------------------------------------------------------------
out=$(dpkg -i "$deb" 2>&1) || { echo "$out" >&2; fail "dpkg -i $deb"; }
grep -q 'halb keygen --out /etc/halb/gossip.key' <<<"$out" || { echo "$out" >&2; fail "postinstall did not print the key hint"; }
ok "dpkg -i $(basename "$deb")"

id halb >/dev/null || fail "user halb missing"
[ "$(id -gn halb)" = halb ] || fail "user halb's primary group is $(id -gn halb), want halb"
ok "system user $(id halb)"

[ -x /usr/bin/halb ] || fail "/usr/bin/halb not executable"
[ -f /lib/systemd/system/halb.service ] || fail "unit not installed"
[ -f /usr/share/doc/halb/examples/talos.yaml ] || fail "examples not installed"
for f in README.md CHANGELOG.md copyright docs/operations.md; do
	[ -f "/usr/share/doc/halb/$f" ] || fail "/usr/share/doc/halb/$f not installed"
done
got=$(mode_owner /etc/halb); [ "$got" = "750 root:halb" ] || fail "/etc/halb is $got, want 750 root:halb"
got=$(mode_owner /etc/halb/halb.yaml); [ "$got" = "640 root:halb" ] || fail "/etc/halb/halb.yaml is $got, want 640 root:halb"
cmp -s /etc/halb/halb.yaml deploy/examples/talos.yaml || fail "/etc/halb/halb.yaml is not the seed example"
got=$(mode_owner /etc/default/halb); [ "$got" = "644 root:root" ] || fail "/etc/default/halb is $got, want 644 root:root"
grep -q '^#HALB_NODE=' /etc/default/halb || fail "/etc/default/halb does not document HALB_NODE"
grep -q '^[^#]' /etc/default/halb && fail "/etc/default/halb sets something; it must be all comments"
ok "files and permissions"

# The binary says the package's version, in both spellings.
want="halb $(dpkg-query -W -f='${Version}' halb)"
got=$(halb --version); [ "$got" = "$want" ] || fail "halb --version says '$got', want '$want'"
got=$(halb version | sed -n 1p); [ "$got" = "$want" ] || fail "halb version says '$got', want '$want'"
ok "halb --version: $want"

# Man pages and completions. Minimal images (Docker's) tell dpkg to skip
# /usr/share/man; then check the package carries the pages instead.
dpkg-deb -c "$deb" | grep '/usr/share/man/man1/halb-run.1.gz$' >/dev/null || fail "the package has no man page halb-run(1)"
if [ -f /usr/share/man/man1/halb.1.gz ]; then
	for page in halb halb-run halb-reload; do
		[ -f "/usr/share/man/man1/$page.1.gz" ] || fail "man page $page(1) not installed"
	done
	if command -v man >/dev/null; then
		out=$(MANPAGER=cat MANWIDTH=80 man --warnings -l /usr/share/man/man1/halb-run.1.gz 2>&1) || { echo "$out" >&2; fail "man -l halb-run.1.gz"; }
		grep -q 'HALB_NODE' <<<"$out" || { echo "$out" >&2; fail "halb-run(1) does not render or lacks HALB_NODE"; }
		grep -qi 'warning' <<<"$out" && { echo "$out" >&2; fail "man warns about halb-run(1)"; }
		out=$(MANPAGER=cat man halb 2>&1) || { echo "$out" >&2; fail "man halb"; }
		ok "man halb, man -l halb-run.1.gz"
	else
		ok "man pages installed (man-db not present to render them)"
	fi
else
	echo "skip: dpkg excludes /usr/share/man here; the package carries the pages"
fi
for f in /usr/share/bash-completion/completions/halb /usr/share/zsh/vendor-completions/_halb /usr/share/fish/vendor_completions.d/halb.fish; do
	[ -s "$f" ] || fail "completion $f not installed"
done
bash -n /usr/share/bash-completion/completions/halb || fail "bash completion does not parse"
out=$(bash -c 'source /usr/share/bash-completion/completions/halb && complete -p halb' 2>&1) || { echo "$out" >&2; fail "bash completion does not register for halb"; }
# Press Tab after "halb sta" and "halb server dr", as bash does: the
# completion asks the installed halb, which must answer with the command.
# Needs the bash-completion package's helpers, which an operator's shell has.
complete_words() {
	bash -c 'source /usr/share/bash-completion/bash_completion && source /usr/share/bash-completion/completions/halb &&
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE} &&
		__start_halb halb "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" && printf "%s\n" "${COMPREPLY[@]}"' complete "$@" 2>/dev/null
}
if [ -f /usr/share/bash-completion/bash_completion ]; then
	got=$(complete_words halb sta); [ "$got" = status ] || fail "Tab after 'halb sta' gives '$got', want 'status'"
	got=$(complete_words halb server dr); [ "$got" = drain ] || fail "Tab after 'halb server dr' gives '$got', want 'drain'"
	ok "completions (bash, zsh, fish); Tab completes halb sta → status"
else
	ok "completions (bash, zsh, fish); bash-completion not installed to press Tab"
fi

# The service must not be enabled or started: no key, seed addresses.
if [ -d /etc/systemd/system/multi-user.target.wants ] && [ -e /etc/systemd/system/multi-user.target.wants/halb.service ]; then
	fail "halb.service was enabled by the package"
fi
ok "service not enabled"

# halb check, as root and as the service user (who must be able to read the
# config); a missing gossip key is a warning, not an error.
out=$(halb check --config /etc/halb/halb.yaml 2>&1) || { echo "$out" >&2; fail "halb check (root)"; }
grep -q 'warning: cluster.key_file' <<<"$out" || { echo "$out" >&2; fail "halb check did not warn about the missing key"; }
out=$(setpriv --reuid=halb --regid=halb --init-groups halb check --config /etc/halb/halb.yaml 2>&1) ||
	{ echo "$out" >&2; fail "halb check as user halb"; }
ok "halb check passes (as root and as halb)"

if command -v systemd-analyze >/dev/null; then
	# verify also runs `man` for Documentation=; where dpkg skipped the man
	# pages (see above) that is the image's doing, not the unit's.
	rc=0
	out=$(systemd-analyze verify /lib/systemd/system/halb.service 2>&1) || rc=$?
	if [ ! -f /usr/share/man/man1/halb.1.gz ]; then
		out=$(grep -v "Command 'man halb" <<<"$out" || true)
		[ -n "$out" ] || rc=0
	fi
	[ "$rc" = 0 ] || { echo "$out" >&2; fail "systemd-analyze verify"; }
	[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify printed warnings"; }
	ok "systemd-analyze verify"
else
	echo "skip: systemd-analyze not installed"
fi

# --- reinstall keeps the operator's config ------------------------------------
echo "# edited by the operator" >>/etc/halb/halb.yaml
echo "HALB_NODE=lb1" >>/etc/default/halb
out=$(dpkg -i "$deb" 2>&1) || { echo "$out" >&2; fail "dpkg -i (reinstall)"; }
grep -q 'edited by the operator' /etc/halb/halb.yaml || fail "reinstall replaced the edited /etc/halb/halb.yaml"
grep -q '^HALB_NODE=lb1$' /etc/default/halb || fail "reinstall replaced the edited /etc/default/halb"
got=$(mode_owner /etc/halb/halb.yaml); [ "$got" = "640 root:halb" ] || fail "after reinstall /etc/halb/halb.yaml is $got"
ok "reinstall keeps the edited config"

# --- remove, then purge ---------------------------------------------------------
dpkg -r halb >/dev/null || fail "dpkg -r halb"
[ ! -e /usr/bin/halb ] || fail "/usr/bin/halb left after remove"
[ ! -e /lib/systemd/system/halb.service ] || fail "unit left after remove"
[ -f /etc/halb/halb.yaml ] || fail "remove deleted the config (only purge may)"
ok "dpkg -r keeps the config"

# A key the operator created is theirs: purge must succeed and leave it.
echo "not-a-real-key" >/etc/halb/gossip.key
dpkg --purge halb >/dev/null || fail "dpkg --purge halb with a leftover gossip.key"
[ ! -e /etc/halb/halb.yaml ] || fail "purge left /etc/halb/halb.yaml"
[ -f /etc/halb/gossip.key ] || fail "purge deleted the operator's gossip.key"
rm -f /etc/halb/gossip.key
rmdir /etc/halb
[ ! -e /etc/default/halb ] || fail "purge left /etc/default/halb"
ok "dpkg --purge removes the config, keeps operator files"

# Without leftovers, purge removes /etc/halb itself.
dpkg -i "$deb" >/dev/null 2>&1 || fail "dpkg -i (second install)"
dpkg --purge halb >/dev/null || fail "dpkg --purge halb"
[ ! -e /etc/halb ] || fail "purge left /etc/halb"
dpkg-query -W halb >/dev/null 2>&1 && fail "halb still known to dpkg after purge"
ok "dpkg --purge leaves no /etc/halb"

echo "PASS: $(basename "$deb")"
