#!/usr/bin/env bash
# chaos.sh — virtlease's fault campaign: sudo ./scripts/chaos.sh --cycles N [--seed S]
#
# Starts a lab of 3 hosts around a 3-member etcd cluster, each host with a
# stand-in hardware watchdog (scripts/lab.sh with VL_LAB_ETCD_MEMBERS=3,
# VL_LAB_HWDOG=1), runs scripts/chaos on it — a random workload (starts,
# stops, live migrations of HA and non-HA guests, two domains on one disk)
# with one random fault per cycle, watched by a checker from outside — and
# stops the lab. Exits non-zero on any violation, with the seed and the log
# around it; the lab's directory (logs) is then kept.
#
# Options: --cycles N (15)  --seed S (from the clock)  --keep (leave the lab
# running)  --markdown FILE (the final table as Markdown)  --only KIND,…
# --no-hwdog (hosts without the stand-in hardware watchdog: self-fencing
# alone; a watchdog killed or stopped comes back before its fence point,
# since one away longer leaves its guests unprotected, which is not promised)
# Environment: VL_CHAOS_ROOT (/var/tmp/vl-chaos.PID), VL_CHAOS_PORT (the
# first free range of 100 ports from 17000), VL_LAB_TTL (8s), VL_LAB_RENEW
# (1s), VL_LAB_MARGIN (3s), VL_LAB_HOOK_TIMEOUT (5s): the lab's timings
# (shorter than the defaults 10s/1s/3s so that 200 cycles take 30–40 min; a
# fence still waits ≥ 4 s without an answer from etcd, which an etcd leader
# election on a busy 2-core machine needs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export GOFLAGS=${GOFLAGS:--mod=mod}
CI=${CI:-}
# APT_PACKAGES, install_packages, check_go; PATH
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

die() {
	printf 'chaos.sh: %s\n' "$*" >&2
	exit 2
}

CYCLES=15 SEED=0 KEEP='' MARKDOWN='' ONLY='' HWDOG=1
while [[ $# -gt 0 ]]; do
	case $1 in
	--cycles) CYCLES=${2:-}; shift 2 ;;
	--seed) SEED=${2:-}; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--markdown) MARKDOWN=${2:-}; shift 2 ;;
	--only) ONLY=${2:-}; shift 2 ;;
	--no-hwdog) HWDOG=0; shift ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ $CYCLES =~ ^[1-9][0-9]*$ ]] || die "--cycles N: want a positive number"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed S: want a number"
[[ $(id -u) == 0 ]] || die "must run as root (the lab needs namespaces, mounts, libvirtd)"

install_packages >/dev/null
check_go >/dev/null

export VL_LAB_ROOT=${VL_CHAOS_ROOT:-/var/tmp/vl-chaos.$$}
export VL_LAB_ETCD_MEMBERS=3 VL_LAB_HWDOG=$HWDOG
export VL_LAB_TTL=${VL_LAB_TTL:-8s} VL_LAB_RENEW=${VL_LAB_RENEW:-1s} VL_LAB_MARGIN=${VL_LAB_MARGIN:-3s}
export VL_LAB_HOOK_TIMEOUT=${VL_LAB_HOOK_TIMEOUT:-5s} VL_LAB_HA_MAX_RESTARTS=${VL_LAB_HA_MAX_RESTARTS:-1000}
unset VL_LAB_NO_WATCHDOG

# ports: 3 hosts and 3 members use P…P+89 (scripts/lab.sh help). Each range
# is locked while this script runs, so two campaigns never share one. Below
# Linux's ephemeral range (32768–60999: a member restarted there can find
# its port taken by an outgoing connection) and the e2e tests' (24000–32000).
BLOCK=100
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
range_free() {
	local p
	for ((p = $1; p < $1 + BLOCK; p++)); do port_busy "$p" && return 1; done
	return 0
}
LOCKS=${VL_E2E_PORT_LOCKS:-/var/tmp/virtlease-e2e-ports}
mkdir -p "$LOCKS"
if [[ -n ${VL_CHAOS_PORT:-} ]]; then
	PORT=$VL_CHAOS_PORT
	range_free "$PORT" || die "ports $PORT…$((PORT + BLOCK - 1)) are not all free (VL_CHAOS_PORT)"
else
	PORT=''
	for ((p = 17000; p < 24000; p += BLOCK)); do
		exec 8>>"$LOCKS/chaos-$p.lock"
		if flock -n 8 && range_free "$p"; then
			PORT=$p
			break
		fi
		exec 8>&-
	done
	[[ -n $PORT ]] || die "no free range of $BLOCK ports in 17000–24000"
fi
export VL_LAB_PORT=$PORT

OK=''
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -z $KEEP ]]; then
		VL_LAB_LOCK_WAIT=60 "$REPO/scripts/lab.sh" stop >/dev/null 2>&1 || echo "chaos.sh: stopping the lab in $VL_LAB_ROOT failed" >&2
		if [[ -n $OK ]]; then
			rm -rf "$VL_LAB_ROOT" "$VL_LAB_ROOT.lock"
		else
			echo "chaos.sh: logs kept in $VL_LAB_ROOT (chaos.log, hosts/*/watchdog.log, hwdog/, etcd*/)" >&2
		fi
	else
		echo "chaos.sh: lab left running: VL_LAB_ROOT=$VL_LAB_ROOT scripts/lab.sh status (stop: … scripts/lab.sh stop --purge)" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$SECONDS
mkdir -p "$VL_LAB_ROOT"
go build -o "$VL_LAB_ROOT/chaos" ./scripts/chaos
"$REPO/scripts/lab.sh" start 3 >/dev/null
echo "chaos.sh: lab up in $VL_LAB_ROOT (ports $PORT…, ttl $VL_LAB_TTL, renew $VL_LAB_RENEW, margin $VL_LAB_MARGIN) in $((SECONDS - T0)) s"
args=(--lab-root "$VL_LAB_ROOT" --port "$PORT" --cycles "$CYCLES" --lab-sh "$REPO/scripts/lab.sh")
[[ $SEED != 0 ]] && args+=(--seed "$SEED")
[[ -n $MARKDOWN ]] && args+=(--markdown "$MARKDOWN")
[[ -n $ONLY ]] && args+=(--only "$ONLY")
rc=0
"$VL_LAB_ROOT/chaos" "${args[@]}" || rc=$?
echo "chaos.sh: $((SECONDS - T0)) s in all"
[[ $rc == 0 ]] && OK=1
(exit "$rc") # not a bare exit: shellcheck would take the trap's function for unreachable
