#!/bin/sh
# Debian postinst for halb: create the service account, give it read access
# to /etc/halb, and tell the operator what to do before starting halb. The
# service is deliberately neither enabled nor started: the packaged config
# describes the seed topology, not this site, and there is no gossip key yet.
set -e

case "$1" in
configure | abort-upgrade | abort-remove | abort-deconfigure) ;;
*) exit 0 ;;
esac

if ! getent group halb >/dev/null; then
	if command -v addgroup >/dev/null; then
		addgroup --system --quiet halb
	else
		groupadd --system halb
	fi
fi
if ! getent passwd halb >/dev/null; then
	if command -v adduser >/dev/null; then
		adduser --system --quiet --ingroup halb --no-create-home \
			--home /nonexistent --shell /usr/sbin/nologin \
			--gecos "halb load balancer" halb
	else
		useradd --system --gid halb --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "halb load balancer" halb
	fi
fi

# halb runs as halb and only reads /etc/halb; root keeps write access. Files
# the operator added (gossip.key) are left alone: they may be shared
# differently on purpose.
chown root:halb /etc/halb
chmod 0750 /etc/halb
if [ -f /etc/halb/halb.yaml ]; then
	chown root:halb /etc/halb/halb.yaml
	chmod 0640 /etc/halb/halb.yaml
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

if [ -z "$2" ]; then
	cat <<'MSG'
halb is installed but not started. Before starting it:
  1. edit /etc/halb/halb.yaml (the packaged file is the seed example:
     VIP 192.168.66.160, nodes lb1/lb2 — see /usr/share/doc/halb/examples/)
  2. create the gossip key once and copy it to every LB host (scp -p keeps
     its mode; chgrp halb it there):
       halb keygen --out /etc/halb/gossip.key --group halb
  3. halb check /etc/halb/halb.yaml
  4. only if this host is not found by itself (no cluster.nodes entry has one
     of its addresses or its host name): HALB_NODE=… in /etc/default/halb
  5. systemctl enable --now halb
  man halb, and /usr/share/doc/halb/, say more.
MSG
else
	echo "halb upgraded; the running daemon keeps the old binary until: systemctl restart halb"
fi
exit 0
