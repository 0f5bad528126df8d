#!/bin/sh
# Debian postrm for halb. On purge, dpkg has removed the packaged conffile;
# /etc/halb goes too unless the operator left files there (gossip.key), which
# are theirs to delete. The halb account stays, as Debian policy advises:
# files elsewhere may still be owned by its uid.
set -e

case "$1" in
remove)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
purge)
	if [ -d /etc/halb ]; then
		rmdir --ignore-fail-on-non-empty /etc/halb
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
