#!/usr/bin/env bash
# demo.sh — virtlease's story, told with real commands on a 2-host lab on
# this machine: sudo ./scripts/demo.sh
#
# Installs what is missing (the apt packages of scripts/lib.sh), builds etcd
# and virtlease, starts a lab (scripts/lab.sh: two "compute nodes", each a
# namespace with its own libvirtd, the virtlease hook and watchdog, one etcd),
# and walks through: the same VM defined on both nodes; started on host-a;
# refused on host-b; what etcd and `virtlease status` say; destroy and start
# on host-b; then host-b cut off from etcd: its watchdog kills the guest
# before its session expires, host-a may start it only after, and host-b,
# back online, does not get it back. Every step checks what it tells; the
# script exits non-zero when one misbehaves. The lab is stopped at the end
# (also on failure or ^C) unless --keep is given.
#
# Options: --keep (leave the lab running to explore), -h/--help.
# Environment: VL_LAB_ROOT (/var/tmp/virtlease-demo), VL_LAB_PORT (the first
# free block of 64 ports from 23000, in steps of 100).
set -euo pipefail
# The whole script is one { … } block, read before it runs: editing demo.sh
# while it runs cannot change what this run does.
{

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CI=${CI:-}
KEEP=0
for a in "$@"; do
	case $a in
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "demo.sh: unknown argument $a (try --help)" >&2
		exit 2
		;;
	esac
done

# ---------------------------------------------------------------- output

if [[ -t 1 && ${TERM:-dumb} != dumb && -z ${NO_COLOR:-} ]]; then
	B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
	B='' D='' G='' R='' N=''
fi
T0=${EPOCHREALTIME/./}
STEP=0

header() {
	STEP=$((STEP + 1))
	printf '\n%s%d. %s%s\n\n' "$B" "$STEP" "$*" "$N"
}
say() { printf '%s\n' "$*"; }
ok() { printf '%s✔ %s%s\n' "$G" "$*" "$N"; }
die() {
	printf '\n%sdemo.sh: FAILED: %s%s\n' "$R" "$*" "$N" >&2
	exit 1
}

# ---------------------------------------------------------------- setup

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
export GOFLAGS=${GOFLAGS:--mod=mod}
[[ $(id -u) == 0 ]] || die "run it as root: sudo ./scripts/demo.sh (it starts libvirtd in namespaces)"

export VL_LAB_ROOT=${VL_LAB_ROOT:-/var/tmp/virtlease-demo}
LAB=scripts/lab.sh # we run from the repository
UUID=5d0e1a5e-0000-4000-8000-000000000002 # vm2's, on both hosts

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local base p
	for ((base = 23000; base <= 23600; base += 100)); do
		for ((p = base; p < base + 64; p++)); do port_busy "$p" && continue 2; done
		echo "$base"
		return 0
	done
	die "no free block of 64 ports in 23000–23663: set VL_LAB_PORT"
}

stop_lab() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ $KEEP == 1 && $rc == 0 ]]; then
		printf '\nThe lab keeps running (--keep). Explore it:\n'
		printf '  eval "$(VL_LAB_ROOT=%s scripts/lab.sh env)"; virsh-host-a list --all; lab-etcdctl get --prefix /virtlease\n' "$VL_LAB_ROOT"
		printf '  VL_LAB_ROOT=%s scripts/lab.sh stop     # when done\n' "$VL_LAB_ROOT"
		exit 0
	fi
	if [[ -f $VL_LAB_ROOT/lab.env ]]; then
		printf '\n%sStopping the lab (every lab process, by PID): scripts/lab.sh stop%s\n' "$D" "$N"
		[[ -n ${FROZEN:-} ]] && "$LAB" thaw host-b 2>/dev/null || true
		"$LAB" stop 2>&1 | sed 's/^/  /' || true
	fi
	exit "$rc"
}

printf '%svirtlease demo%s: one VM, two compute nodes, one etcd — the VM runs on one node only.\n' "$B" "$N"
printf '\n%sSetup%s (packages, Go, build)\n' "$B" "$N"
install_packages
check_go
# One demo at a time per lab directory: a second one would stop this one's lab.
mkdir -p "$(dirname "$VL_LAB_ROOT")"
exec 8>>"$VL_LAB_ROOT.demo.lock"
flock -n 8 || die "another demo.sh is running on $VL_LAB_ROOT (wait for it, or set VL_LAB_ROOT=/var/tmp/another-demo)"
# A lab left over from an interrupted run, in the demo's own directory only.
if [[ -f $VL_LAB_ROOT/lab.env ]]; then "$LAB" stop >/dev/null 2>&1 || true; fi
export VL_LAB_PORT=${VL_LAB_PORT:-$(pick_port)}
trap stop_lab EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers

# on HOST CMD…: show "HOST# CMD" and run CMD inside lab host HOST (its own
# /etc/libvirt, /run, libvirtd: plain `virsh` talks to HOST's libvirtd).
# Sets OUT (stdout+stderr) and RC; never fails by itself.
on() {
	local h=$1
	shift
	printf '%s%s#%s %s\n' "$B" "$h" "$N" "$*"
	RC=0
	OUT=$("$LAB" exec "$h" env PATH="$VL_LAB_ROOT/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$@" 2>&1 8>&-) || RC=$?
	[[ -n $OUT ]] && printf '%s\n' "$OUT" | sed -e '/^$/d'
	return 0
}

# on_sh HOST 'PIPELINE': like on, for a shell pipeline.
on_sh() {
	local h=$1
	printf '%s%s#%s %s\n' "$B" "$h" "$N" "$2"
	RC=0
	OUT=$("$LAB" exec "$h" sh -c "$2" 2>&1 8>&-) || RC=$?
	[[ -n $OUT ]] && printf '%s\n' "$OUT" | sed -e '/^$/d'
	return 0
}

# here CMD…: show "$ CMD" and run it on the machine itself. Sets OUT and RC.
here() {
	printf '%s$%s %s\n' "$B" "$N" "$*"
	RC=0
	OUT=$("$@" 2>&1 8>&-) || RC=$? # fd 8 is our lock: no daemon may keep it
	[[ -n $OUT ]] && printf '%s\n' "$OUT" | sed -e '/^$/d'
	return 0
}

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$VL_LAB_PORT" --dial-timeout 2s --command-timeout 3s "$@"; }

# qemu_pid HOST: the PID of vm2's QEMU on HOST (libvirt's pid file, checked
# against /proc: a live process with "-uuid UUID"), "" when none runs.
qemu_pid() {
	local f pid cmd
	f=$VL_LAB_ROOT/hosts/$1/run/libvirt/qemu/vm2.pid
	pid=$(tr -dc 0-9 2>/dev/null <"$f" || true)
	[[ -n $pid ]] || return 0
	pid=$(host_pid "$VL_LAB_ROOT/hosts/$1" "$pid")
	[[ -n $pid ]] || return 0
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
	[[ $cmd == *"-uuid $UUID"* ]] && echo "$pid"
	return 0
}

# host_b_key: "yes" when host-b's session key exists in etcd, "no" when it
# does not, "" when etcd could not be asked.
host_b_key() {
	local out
	out=$(etcdctl_ get --keys-only /virtlease/hosts/host-b 2>/dev/null) || return 0
	if [[ $out == *host-b* ]]; then echo yes; else echo no; fi
}

# holder: the host named by vm2's domain key, "" when nobody holds it.
holder() {
	etcdctl_ get --print-value-only "/virtlease/domains/$UUID" | sed -n 's/.*"host":"\([^"]*\)".*/\1/p'
}

# ms MICROSECONDS_SINCE: milliseconds since then.
ms() { echo $(((${EPOCHREALTIME/./} - $1) / 1000)); }

# elapsed MICROSECONDS_SINCE: "6.9" (seconds, one decimal).
elapsed() {
	local us=$((${EPOCHREALTIME/./} - $1))
	printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

# ---------------------------------------------------------------- the story

header "Two compute nodes, host-a and host-b, and one etcd"
say "Each lab host is a namespace on this machine with its own libvirtd, the virtlease hook"
say "installed as /etc/libvirt/hooks/qemu, and a 'virtlease watchdog' holding the host's etcd"
say "session (TTL 10 s, renewed every second, fence margin 3 s). Starting them:"
echo
t=$SECONDS
here "$LAB" start 2
[[ $RC == 0 ]] || die "the lab did not start (see above)"
ok "lab up in $((SECONDS - t)) s"
echo
say "Both hosts define the same VM: same name, same UUID, the same shared disk (an NBD export"
say "both can open, like a Ceph RBD image). Nothing in libvirt stops it from running twice."
echo
on host-a virsh domuuid vm2
ua=$OUT
on host-b virsh domuuid vm2
[[ $RC == 0 && $OUT == "$ua" && $OUT == *"$UUID"* ]] || die "vm2 does not have UUID $UUID on both hosts"
on_sh host-a "virsh dumpxml vm2 | grep -A3 '<source protocol'"
da=$OUT
on_sh host-b "virsh dumpxml vm2 | grep -A3 '<source protocol'"
[[ $OUT == *"protocol='nbd'"* && $OUT == "$da" ]] || die "vm2's disk is not the same nbd export on both hosts"
ok "same UUID on both hosts, same disk"

header "Start vm2 on host-a"
on host-a virsh start vm2
[[ $RC == 0 ]] || die "virsh start vm2 on host-a failed"
on host-a virsh list
[[ $OUT == *vm2*running* ]] || die "vm2 is not running on host-a"
PID_A=$(qemu_pid host-a)
[[ -n $PID_A ]] || die "no QEMU process for vm2 on host-a"
ok "vm2 runs on host-a (QEMU pid $PID_A)"

header "Start it on host-b too: refused"
say "This is the accident virtlease exists for: the second start. The hook claims the domain"
say "and its disk in etcd before QEMU starts; host-a holds them, so the start is refused."
echo
t=${EPOCHREALTIME/./}
on host-b virsh start vm2
took=$(ms "$t")
[[ $RC != 0 ]] || die "host-b started vm2 while host-a runs it"
[[ $OUT == *"virtlease: domain vm2"*"is running on host host-a"* ]] || die "host-b's refusal does not name host-a"
[[ -z $(qemu_pid host-b) ]] || die "a QEMU for vm2 runs on host-b"
ok "refused in ${took} ms (the whole virsh call), naming host-a; vm2 has one QEMU, on host-a (pid $PID_A), none on host-b"

header "What etcd knows"
say "Every claim is a key attached to its host's session lease: when a host stops renewing it,"
say "etcd deletes all its keys at once. The values are JSON, readable with etcdctl:"
echo
here env ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$VL_LAB_PORT" get --prefix /virtlease
[[ $RC == 0 ]] || die "etcdctl get failed"
[[ $(holder) == host-a ]] || die "vm2's domain key does not name host-a"
echo
on host-a virtlease status
[[ $RC == 0 && $OUT == *"vm2"*"$UUID"*"host-a"* ]] || die "virtlease status does not show vm2 on host-a"
ok "vm2's domain and disk keys name host-a, on host-a's lease"

header "Destroy vm2 on host-a; now host-b may start it"
on host-a virsh destroy vm2
[[ $RC == 0 ]] || die "virsh destroy vm2 on host-a failed"
here env ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$VL_LAB_PORT" get --prefix /virtlease/domains/
[[ -z $OUT ]] || die "vm2's domain key is still there after its destroy"
say "(nothing: libvirt's stop hook released the keys)"
on host-b virsh start vm2
[[ $RC == 0 ]] || die "host-b cannot start vm2 after host-a destroyed it"
on host-b virtlease status vm2
[[ $(holder) == host-b ]] || die "vm2's domain key does not name host-b"
PID_B=$(qemu_pid host-b)
[[ -n $PID_B && -z $(qemu_pid host-a) ]] || die "vm2 does not run on host-b alone"
ok "vm2 runs on host-b (QEMU pid $PID_B); its keys name host-b"

header "host-b loses etcd (a network partition)"
say "We freeze host-b's path to etcd: its watchdog's renewals hang. It must kill vm2 before"
say "its session can expire (deadline − 3 s margin), because once etcd expires the session"
say "(10 s after the last renewal) host-a may start vm2. Meanwhile host-a tries to start vm2"
say "every second; times are counted from the cut."
echo
here "$LAB" freeze host-b
[[ $RC == 0 ]] || die "cannot freeze host-b's proxy"
FROZEN=1
cut=${EPOCHREALTIME/./}
killed='' expired='' started='' next_try=0 tries=0
while :; do
	now=$(elapsed "$cut")
	pa=$(qemu_pid host-a) pb=$(qemu_pid host-b)
	[[ -n $pa && -n $pb ]] && die "t+$now s: vm2 runs on host-a (pid $pa) and host-b (pid $pb) at once"
	if [[ -z $killed && -z $pb ]]; then
		killed=$now
		if [[ -z $expired ]]; then
			say "t+${killed} s  host-b's watchdog killed vm2 (QEMU pid $PID_B is gone); host-b's session still exists in etcd"
		else
			die "host-b's session expired before its watchdog killed vm2 (t+${killed} s)"
		fi
	fi
	if [[ -z $expired && $(host_b_key) == no ]]; then
		expired=$now
		say "t+${expired} s  etcd expired host-b's session: its keys are gone"
		[[ -n $killed ]] || die "host-b's session expired while vm2 still ran there"
	fi
	if ((${EPOCHREALTIME/./} >= next_try)); then
		next_try=$((${EPOCHREALTIME/./} + 1000000))
		tries=$((tries + 1))
		rc=0
		out=$("$LAB" exec host-a virsh start vm2 2>&1 8>&-) || rc=$?
		t=$(elapsed "$cut")
		if [[ $rc == 0 ]]; then
			started=$t
			say "t+${started} s  host-a# virsh start vm2  →  $(printf '%s' "$out" | sed '/^$/d')"
			# The session may have expired since this iteration looked:
			# host-b's hosts key went with its claims, in the same expiry.
			if [[ -z $expired && $(host_b_key) == no ]]; then
				expired=$started
				say "         (etcd had expired host-b's session: its keys are gone)"
			fi
			break
		fi
		say "t+${t} s  host-a# virsh start vm2  →  refused: $(printf '%s' "$out" | grep -o 'virtlease: .*' || printf '%s' "$out" | tail -n 1)"
		[[ $out == *"virtlease:"* ]] || die "host-a's start failed, but not in virtlease's hook"
	fi
	(($(elapsed "$cut" | cut -d. -f1) < 30)) || die "host-a could not start vm2 within 30 s of the cut"
	sleep 0.1
done
[[ -n $killed ]] || die "vm2 still runs on host-b"
[[ -n $expired ]] || die "host-a started vm2 before host-b's session expired"
[[ -z $(qemu_pid host-b) ]] || die "vm2 runs on host-b again"
echo
say "host-b's watchdog log:"
grep -E 'renewal failed|fencing:|msg=killed' "$VL_LAB_ROOT/hosts/host-b/watchdog.log" | head -n 4 | sed 's/^/  /'
echo
ok "host-b killed vm2 at t+${killed} s, before its session expired at t+${expired} s; host-a started it at t+${started} s: never two at once"

header "host-b comes back: it does not get vm2 back"
here "$LAB" thaw host-b
FROZEN=
say "(waiting for host-b's watchdog to hold a new session)"
for ((i = 0; i < 150; i++)); do
	grep -q '"state":"ok"' "$VL_LAB_ROOT/hosts/host-b/run/virtlease/session" 2>/dev/null &&
		[[ $(host_b_key) == yes ]] && break
	sleep 0.1
done
((i < 150)) || die "host-b's watchdog did not get a new session within 15 s"
grep 'session held' "$VL_LAB_ROOT/hosts/host-b/watchdog.log" | tail -n 1 | sed 's/^/  /'
on host-b virsh list --all
[[ -z $(qemu_pid host-b) ]] || die "vm2 runs on host-b again"
on host-b virsh start vm2
[[ $RC != 0 && $OUT == *"is running on host host-a"* ]] || die "host-b's start of vm2 was not refused naming host-a"
on host-a virtlease status
[[ $(holder) == host-a && -n $(qemu_pid host-a) && -z $(qemu_pid host-b) ]] || die "vm2 is not on host-a alone"
ok "vm2 runs on host-a only; host-b is back in the cluster and refused"

printf '\n%sEvery step behaved as told%s (%s s).\n' "$B" "$N" "$(elapsed "$T0")"
exit
}
