#!/bin/sh
# Debian prerm for halb: stop the daemon before its files go away. A stop is
# graceful (VIP handover to a peer, then connection drain). On removal it is
# also disabled, so no dangling wants/ link is left behind. On upgrade it
# keeps running; postinstall says how to restart it.
set -e

case "$1" in
remove | deconfigure)
	if [ -d /run/systemd/system ]; then
		systemctl stop halb.service >/dev/null 2>&1 || true
	fi
	# systemctl disable works without a running systemd (chroots, containers).
	if command -v systemctl >/dev/null; then
		systemctl disable halb.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
