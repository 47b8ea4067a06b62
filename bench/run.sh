#!/usr/bin/env bash
# Measures steward against supervisord with N merchants (default: 100 and
# 500) and prints both side by side with the ratio. See bench/README.md.
#
#   bench/run.sh [N...]
#
# Environment: LOGSHIM=self (no bin/steward-logshim: steward is its own log
# shim), HEALTH (a health block body for steward's specs, e.g.
# 'interval = "1h"' to measure without probes), KILLS (default 30), IDLE (default 15s), PORT_BASE (default
# 30001), KEEP=1 keeps the scratch directory. Needs root for apt-get and for
# running merchants as another user (RUN_USER, default nobody).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(100 500)
KILLS=${KILLS:-30}
SYSTEMS=${SYSTEMS:-steward,supervisord}
IDLE=${IDLE:-15s}
PORT_BASE=${PORT_BASE:-30001}
RUN_USER=${RUN_USER:-nobody}
RESULTS=$ROOT/bench/results

# supervisord from Debian's package, without starting its system service.
if ! command -v supervisord >/dev/null; then
	echo "installing supervisor (apt-get)..." >&2
	added_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		added_policy=1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq supervisor >/dev/null
	[ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# The scratch directory: merchants run as $RUN_USER and must read what is
# under it, so it is 0755 (mktemp makes 0700) below the world-searchable /tmp.
WORK=$(mktemp -d /tmp/fleetbench.XXXXXX)
chmod 0755 "$WORK"

DRIVER=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# The driver stops what it started when it ends; if it is still
	# running, it is asked to (by its pid) and waited for.
	if [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null; then
		kill -TERM "$DRIVER" 2>/dev/null || true
		wait "$DRIVER" 2>/dev/null || true
	fi
	# Whatever the driver left (it was killed, say): steward's merchants are
	# stopped by the processes steward recorded, supervisord by its pid file
	# (it stops its programs).
	for host in "$WORK"/steward-*/steward.hcl; do
		[ -d "$(dirname "$host")/state" ] || continue
		bin/steward destroy -auto-approve -config "$host" >/dev/null 2>&1 ||
			echo "run.sh: steward destroy -config $host failed" >&2
	done
	for pidfile in "$WORK"/supervisord-*/supervisord.pid; do
		[ -f "$pidfile" ] || continue
		pid=$(cat "$pidfile")
		kill -TERM "$pid" 2>/dev/null || continue
		for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	done
	if [ -n "${KEEP:-}" ]; then
		echo "run.sh: kept $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PKG_VERSION=1.0.0
echo "building bin/steward, bin/steward-logshim, the driver and invoicing $PKG_VERSION..." >&2
go build -o bin/steward ./cmd/steward
go build -o bin/steward-logshim ./cmd/steward-logshim
# LOGSHIM=self: measure steward running itself as the log shim.
[ "${LOGSHIM:-}" != self ] || rm -f bin/steward-logshim
go build -o "$WORK/bin/fleetbench" ./bench/fleetbench
go run ./examples/pkgbuild -out "$WORK/packages" -versions "$PKG_VERSION" -broken "" >&2
# supervisord runs the app unpacked from the same tarball.
mkdir -p "$WORK/app"
tar -xzf "$WORK/packages/invoicing-$PKG_VERSION.tar.gz" -C "$WORK/app"
chmod -R a+rX "$WORK"

mkdir -p "$RESULTS"
NLIST=$(IFS=,; echo "${NS[*]}")
"$WORK/bin/fleetbench" \
	-steward bin/steward \
	-packages "$WORK/packages" \
	-version "$PKG_VERSION" \
	-app "$WORK/app/bin/invoicing" \
	-work "$WORK" \
	-user "$RUN_USER" \
	-n "$NLIST" \
	-kills "$KILLS" \
	-systems "$SYSTEMS" \
	-idle "$IDLE" \
	-port-base "$PORT_BASE" \
	-health "${HEALTH:-}" \
	-json "$RESULTS/latest.json" \
	-txt-dir "$RESULTS" \
	-label "steward commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench' || echo ' (with uncommitted changes)')" &
DRIVER=$!
wait "$DRIVER"
