#!/usr/bin/env bash
# check.sh — model-check virtlease's protocol (docs/model/virtlease.pml) with spin.
#
# Usage: docs/model/check.sh [--full] [--update] [CHECK…]
#
# Every check generates a verifier (spin -a), compiles it (gcc) and runs it
# under a timeout, in a temporary directory:
#   verify  exhaustive safety search (pan -DSAFETY, depth-first) over every
#           property; expected: 0 errors;
#   find    shortest counterexample (pan -DSAFETY -DBFS) of two_running, or
#           the probe's witness; expected: what expect/CHECK.txt's first line
#           says, e.g. "VIOLATED two_running". The rest of that file is the
#           counterexample in words (check.sh --update rewrites it).
# Prints a table (check, kind, expected, got, states, seconds); exits 1 when
# any result differs from its expectation, 2 when spin or gcc is missing.
#
#   --full    also run the big scopes: "full", every feature but HA and
#             watchdog crashes at once (40 million states, 8 minutes and 5 GB
#             here; not for every CI run), and "restart-nodevice-etcd"
#             (watchdog crashes without a device, two leases per host; 6
#             million states)
#   --update  rewrite expect/*.txt from this run's counterexamples
#   CHECK…    run only these checks
#
# Environment: VL_MODEL_TIMEOUT (seconds per check, default 180),
# VL_MODEL_MEMLIM (MB per verifier, default 4096).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL=$HERE/virtlease.pml
TIMEOUT=${VL_MODEL_TIMEOUT:-180}
MEMLIM=${VL_MODEL_MEMLIM:-4096}

# name | kind | spin flags
# The verified checks split the model's features so that each one is
# exhaustive and quick; "full" has them all. A "find" check differs from the
# verified check whose scope contains it in one mechanism only (README.md).
FIND_BASE="-DHOOK_AGE -DNOLATE -DNORECONCILE -DNOLEADER"
CHECKS=(
	"fence|verify|-DNOMIG -DRELEASE_RACE"
	"migration|verify|-DNOLATE -DNOLEADER"
	"migration-etcd|verify|-DMAXEP=1"
	"ha|verify|-DHA -DNOMIG -DMAXEP=1"
	"three-hosts|verify|-DNH=3 -DNOMIG -DMAXEP=1 -DNOLATE -DNOLEADER"
	"restart|verify|-DWDCRASH -DDEVICE -DNOMIG -DMAXEP=2"
	"restart-nodevice|verify|-DWDCRASH -DNOMIG -DMAXEP=1"
	"restart-migration|verify|-DWDCRASH -DDEVICE -DMAXEP=1 -DNOLATE -DNOLEADER"
	"ha-migration|verify|-DHA -DMAXEP=1 -DNOLATE -DNOLEADER"
	"probe-failover|find|-DPROBE_FAILOVER -DNOMIG -DMAXEP=2 $FIND_BASE"
	"probe-handoff|find|-DPROBE_HANDOFF -DMAXEP=1 $FIND_BASE"
	"probe-ha|find|-DPROBE_HA -DHA -DNOMIG -DMAXEP=1 $FIND_BASE"
	"probe-reset|find|-DPROBE_RESET -DWDCRASH -DDEVICE -DNOMIG -DMAXEP=1 $FIND_BASE"
	"reply-dated|find|-DREPLY_DATED -DNOMIG -DMAXEP=1 $FIND_BASE"
	"zero-margin|find|-DMARGIN=0 -DNOMIG -DMAXEP=1 $FIND_BASE"
	"margin-is-election|find|-DMARGIN=1 -DNOMIG -DMAXEP=1 -DHOOK_AGE -DNOLATE -DNORECONCILE"
	"release-no-compare|find|-DRELEASE_ANY -DNOMIG -DMAXEP=1 $FIND_BASE"
	"slow-kill|find|-DSLOW_KILL -DNOMIG -DMAXEP=1 $FIND_BASE"
	"clock-drift|find|-DCLOCK_DRIFT -DNOMIG -DMAXEP=1 $FIND_BASE"
	"early-expiry|find|-DEARLY_EXPIRY -DNOMIG -DMAXEP=1 $FIND_BASE"
	"code-prepare-norecheck|find|-DCODE_NORECHECK -DNOMIG -DMAXEP=1 $FIND_BASE"
	"code-handoff|find|-DCODE_HANDOFF -DMAXEP=2 $FIND_BASE"
	"code-incoming-marker|find|-DCODE_MARKER -DMAXEP=1 $FIND_BASE"
	"code-incoming-marker-ttl|find|-DCODE_MARKER_TTL -DMAXEP=1 $FIND_BASE"
	"code-resume-after-dial|find|-DCODE_RESUME_AFTER_DIAL -DWDCRASH -DNOMIG -DMAXEP=1 $FIND_BASE"
	"code-restart-loop|find|-DCODE_RESUME_AFTER_DIAL -DWDCRASH -DDEVICE -DNOMIG -DMAXEP=1 $FIND_BASE"
	"code-stale-incoming|find|-DCODE_STALE_INCOMING -DEARLY_REFUSAL -DMAXEP=1 $FIND_BASE"
	"code-idempotent-claim|find|-DCODE_IDEMPOTENT_CLAIM -DRELEASE_RACE -DNOMIG -DMAXEP=1 -DHOOK_AGE -DNOLATE -DNOLEADER"
	"code-handoff-any|find|-DCODE_HANDOFF_ANY -DEARLY_REFUSAL -DHA -DMAXEP=1 $FIND_BASE"
	"residual-stop-prepared|find|-DSTOP_ANY -DEARLY_REFUSAL -DHA -DMAXEP=1 $FIND_BASE"
)
# --full: the big scopes (minutes each)
FULLS=(
	"full|verify|"
	"restart-nodevice-etcd|verify|-DWDCRASH -DNOMIG -DMAXEP=2"
)

FULLRUN=false
UPDATE=false
ONLY=()
for a in "$@"; do
	case $a in
	--full) FULLRUN=true ;;
	--update) UPDATE=true ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "check.sh: unknown option $a" >&2
		exit 2
		;;
	*) ONLY+=("$a") ;;
	esac
done
if $FULLRUN; then
	CHECKS+=("${FULLS[@]}")
elif ((${#ONLY[@]} > 0)); then
	for c in "${FULLS[@]}"; do
		[[ " ${ONLY[*]} " == *" ${c%%|*} "* ]] && CHECKS+=("$c")
	done
fi

for tool in spin gcc timeout; do
	if ! command -v "$tool" >/dev/null; then
		echo "check.sh: $tool not found (apt-get install -y spin gcc libc6-dev)" >&2
		exit 2
	fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vl-model.XXXXXX")
MISMATCH=0
# keep the verifiers, outputs and replays when something differs
trap 'if ((MISMATCH == 0)); then rm -rf "$WORK"; else echo "check.sh: outputs kept in $WORK" >&2; fi' EXIT

# summarize: a spin -t replay → the model's own lines, ticks numbered.
summarize() {
	awk '
		{ line = $0; sub(/^[ \t]+/, "", line) }
		line == "--- tick" { t++; next }
		line ~ /^(h[0-9]+:|etcd:|\(|migration |VIOLATED |REACHED )/ {
			printf "t=%-3d %s%s\n", t, (line ~ /^(etcd:|\(|migration )/ ? "    " : ""), line
		}
	'
}

RESULTS=()
T0=$SECONDS

for c in "${CHECKS[@]}"; do
	IFS='|' read -r name kind flags <<<"$c"
	if ((${#ONLY[@]} > 0)) && [[ " ${ONLY[*]} " != *" $name "* ]]; then
		continue
	fi
	dir=$WORK/$name
	mkdir -p "$dir"
	cp "$MODEL" "$dir/virtlease.pml"
	expect_file=$HERE/expect/$name.txt
	cflags="-O2 -w -DSAFETY -DMEMLIM=$MEMLIM"
	runflags=""
	spinflags=$flags
	if [[ $kind == verify ]]; then
		expected="0 errors"
		runflags="-m4000000"
		[[ $name == full ]] && cflags+=" -DCOLLAPSE" && runflags+=" -w26"
	else
		spinflags="-DP1ONLY $flags"
		cflags="-O1 ${cflags#-O2 } -DBFS"
		if [[ -f $expect_file ]]; then
			expected=$(head -n 1 "$expect_file")
		else
			expected="(no expect/$name.txt)"
		fi
	fi
	printf '=== %-24s spin %s\n' "$name" "$spinflags"
	got=""
	states="-"
	secs="-"
	# shellcheck disable=SC2086 # flags are word lists
	if ! (cd "$dir" && spin $spinflags -a virtlease.pml >spin.out 2>&1); then
		got="spin -a failed"
		sed 's/^/    /' "$dir/spin.out"
	elif ! (cd "$dir" && gcc $cflags -o pan pan.c >gcc.out 2>&1); then
		got="gcc failed"
		sed 's/^/    /' "$dir/gcc.out"
	else
		rc=0
		(cd "$dir" && timeout "$TIMEOUT" ./pan $runflags >pan.out 2>&1) || rc=$?
		states=$(awk '/states, stored/ { print $1; exit }' "$dir/pan.out")
		secs=$(awk '/elapsed time/ { print $4; exit }' "$dir/pan.out")
		states=${states:--}
		secs=${secs:--}
		errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$dir/pan.out" | head -n 1)
		if ((rc == 124)); then
			got="timeout (${TIMEOUT}s)"
		elif grep -q "max search depth too small" "$dir/pan.out"; then
			got="depth limit reached"
		elif grep -qi "out of memory" "$dir/pan.out"; then
			got="out of memory (${MEMLIM} MB)"
		elif [[ -z $errors ]]; then
			got="pan failed (exit $rc)"
			tail -n 5 "$dir/pan.out" | sed 's/^/    /'
		elif [[ $errors == 0 ]]; then
			got="0 errors"
		else
			(cd "$dir" && spin $spinflags -t virtlease.pml >replay.out 2>&1) || true
			summarize <"$dir/replay.out" >"$dir/summary.txt"
			got=$(grep -m 1 -E '(VIOLATED|REACHED) ' "$dir/summary.txt" | sed -E 's/^t=[0-9]+ +//' || true)
			got=${got:-"error (see replay)"}
			if [[ $kind == verify || $got != "$expected" ]]; then
				n=$(wc -l <"$dir/summary.txt")
				if ((n > 40)); then
					echo "    counterexample (t = tick), its last 40 of $n events (all in $dir/summary.txt):"
				else
					echo "    counterexample (t = tick):"
				fi
				tail -n 40 "$dir/summary.txt" | sed 's/^/      /'
			fi
			if [[ $kind == find ]]; then
				if $UPDATE; then
					{
						echo "$got"
						echo "# check.sh $name: spin $spinflags; pan -DSAFETY -DBFS (shortest counterexample)."
						echo "# The first line is the expectation; below, the counterexample (t = tick), written by check.sh --update."
						cat "$dir/summary.txt"
					} >"$expect_file"
					expected=$got
				elif [[ -f $expect_file && $got == "$expected" ]] && ! diff -q <(grep -v '^#' "$expect_file" | tail -n +2) "$dir/summary.txt" >/dev/null; then
					echo "    note: the counterexample differs from expect/$name.txt (same verdict; check.sh --update rewrites it)"
				fi
			fi
		fi
	fi
	mark=ok
	if [[ $got != "$expected" ]]; then
		mark=MISMATCH
		MISMATCH=$((MISMATCH + 1))
	fi
	RESULTS+=("$(printf '%-24s %-6s %-30s %-30s %11s %8s  %s' "$name" "$kind" "$expected" "$got" "$states" "$secs" "$mark")")
done

printf '\n%-24s %-6s %-30s %-30s %11s %8s\n' check kind expected got states seconds
printf '%s\n' "${RESULTS[@]}"
printf '\n%d check(s), %d mismatch(es), %d s (spin %s)\n' "${#RESULTS[@]}" "$MISMATCH" $((SECONDS - T0)) \
	"$(spin -V 2>/dev/null | awk '{ print $3 }')"
((MISMATCH == 0))
