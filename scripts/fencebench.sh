#!/usr/bin/env bash
# fencebench.sh — measure fencing on a real lab: sudo ./scripts/fencebench.sh [N]
#
# Partitions a lab host running a guest N times (default 10; freeze its proxy
# to etcd), alternating host-a and host-b, every second run with the guest's
# QEMU SIGSTOPped first, and prints per run the fence time (freeze → the
# guest's QEMU gone, and the same from the last renewal etcd acknowledged)
# and the takeover time (freeze → the other host's `virsh start` succeeds),
# then min/median/max against the configured ttl and margin. The safety bounds
# (fenced within ttl − margin + 1 s, no takeover before the session deadline,
# no overlap) are asserted on every run. Not part of scripts/test.sh.
#
# Environment: VL_LAB_TTL, VL_LAB_RENEW, VL_LAB_MARGIN, VL_LAB_HOOK_TIMEOUT
# (default 10s, 1s, 3s, 5s) set the lab's timing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export GOFLAGS=${GOFLAGS:--mod=mod}
N=${1:-10}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/fencebench.sh [N]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "fencebench.sh: must run as root (the lab needs namespaces and libvirtd)" >&2; exit 2; }
# each run takes about ttl + 5 s
VL_FENCEBENCH=$N CI=true go test -tags e2e -count=1 -v -timeout $((N * 60 + 300))s \
	-run '^TestLabFenceBench$' ./cmd/virtlease/
