#!/usr/bin/env bash
# lab.sh — a virtlease lab on one machine: one etcd, N "hosts", each a PID+mount+UTS
# namespace (its own /proc, as a real host has) with its own libvirtd, virtlogd,
# /etc/libvirt (the virtlease hook), /etc/virtlease, /run, /var/lib/libvirt, /var/lib/virtlease,
# and its own TCP proxy to etcd. libvirt's stock namespaces put each QEMU in a mount
# namespace of its own, and the watchdog runs in another (as its hardened
# systemd unit would), so nothing on a host shares the watchdog's mount namespace.
# Run "scripts/lab.sh help" for the commands.
#
# Everything lives under $VL_LAB_ROOT (default /var/tmp/virtlease-lab); ports
# start at $VL_LAB_PORT (default 23790): etcd client P, peer P+1, qemu-nbd P+2,
# host i's proxy P+3+i; host i's libvirtd gives its guests VNC ports
# P+32+16i…P+39+16i and takes incoming migrations on P+40+16i…P+47+16i, so
# that neither two hosts nor two labs race for libvirt's default ranges (every
# lab host shares the machine's network). A lab of N hosts uses P…P+31+16N.
# With VL_LAB_ETCD_MEMBERS=M > 1, etcd is a cluster of M members, each its own
# process, data dir and ports, and each host reaches every member through a
# proxy of its own (member 0 and the proxies to it keep the ports above; the
# others come after the hosts' ranges, see usage). VL_LAB_HWDOG=1 gives each
# host a stand-in hardware watchdog: a FIFO read by a supervisor
# (scripts/labhwdog) that "resets" the host when it is not petted in time.
# Commands that change the lab hold flock "$ROOT.lock".
# Processes are only ever ended by recorded PID or by membership of a lab
# host's PID namespace; nothing is killed by name.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/lab.sh COMMAND [ARGS]

  start [N]                 start (or complete) a lab of N hosts (default 2): host-a, host-b, …
  stop [--purge]            end every lab process by PID / lab namespace; --purge also removes ROOT
  status                    which hosts and processes are alive
  env                       shell lines: eval "$(scripts/lab.sh env)"
  virsh HOST ARGS…          virsh against HOST's libvirtd
  exec HOST CMD…            run CMD inside HOST's PID+mount+UTS namespaces
  freeze HOST | thaw HOST   SIGSTOP / SIGCONT HOST's proxies to etcd (a partition that hangs)
  cut HOST | heal HOST [DELAY]
                            kill HOST's proxies (connections reset) / start them again, with
                            optional per-chunk latency (e.g. 50ms)
  restart-libvirtd HOST [--kill]
                            stop HOST's libvirtd (SIGTERM, or SIGKILL) and start it again
  restart-watchdog HOST     stop HOST's virtlease watchdog (SIGTERM) and start it again
  start-watchdog HOST | stop-watchdog HOST [SIGNAL]
  hosts                     the lab's host names, one a line
  boot HOST [--cold]        bring HOST back after a power loss or a hardware watchdog reset:
                            start whichever of virtlogd, libvirtd, the watchdog device's
                            supervisor and the virtlease watchdog is not running; --cold
                            (only when nothing of HOST runs) first empties its /run, as a
                            reboot does (the stand-in watchdog's FIFO stays)
  etcd-kill N | etcd-start N
                            SIGKILL etcd member N (0…M-1) / start it again on its data dir
  etcd-stop N | etcd-cont N SIGSTOP / SIGCONT etcd member N
  etcd-leader               the index N of the member etcd says leads now
  etcd-endpoints            every member's client URL, comma-separated

environment:
  VL_LAB_ROOT (/var/tmp/virtlease-lab)  VL_LAB_PORT (23790): a lab of N hosts uses
                         ports P…P+31+16N (etcd P, peer P+1, qemu-nbd P+2, host i's proxy
                         P+3+i, VNC P+32+16i…+7, incoming migrations P+40+16i…+7)
  VL_LAB_ETCD_MEMBERS (1) etcd members M (1…9): member 0 as above; with X = P+32+16N,
                         member m > 0 listens on X+2(m-1) (peer +1) in ROOT/etcdm, and host
                         i reaches it through its proxy on X+2(M-1)+i(M-1)+m-1; the lab then
                         uses P…X-1+(M-1)(N+2). Every host's config lists all its proxies.
  VL_LAB_HWDOG=1         each host gets fence.hardware_watchdog /run/hwdog.fifo, a FIFO read
                         by a lab supervisor (ROOT/hwdog/HOST.log) standing in for a device:
                         armed when the watchdog opens it, not petted ("p") within
                         ttl - 2×renew - 1 s (a close without the magic "V" keeps it counting)
                         it SIGKILLs every process of the host but its namespace holder (a
                         reset; "boot HOST" brings the host back). No real device is touched.
  VL_BIN                 use this virtlease binary instead of building ./cmd/virtlease
  VL_LAB_TOOLS           a directory of prebuilt etcd, labproxy, … to copy instead of building
  VL_LAB_NO_WATCHDOG=1   do not start virtlease watchdogs
  VL_LAB_TTL (10s) VL_LAB_RENEW (1s) VL_LAB_MARGIN (3s) VL_LAB_HOOK_TIMEOUT (5s) VL_LAB_HA_MAX_RESTARTS (3)
                         timings written to each host's /etc/virtlease/config.yaml
  VL_LAB_CAPS_CACHE (ROOT/capscache)
                         where libvirtd's QEMU capabilities are kept between hosts and labs
  VL_LAB_LOCK_WAIT (600) seconds to wait for another lab command on the same ROOT

every host defines (testdata/lab/*.xml.in):
  vm1       5d0e1a5e-0000-4000-8000-000000000001  qcow2 file ROOT/shared/vm1.qcow2
  vm1-copy  5d0e1a5e-0000-4000-8000-0000000000c1  another UUID, the same disk file
  vm2       5d0e1a5e-0000-4000-8000-000000000002  nbd disk (qemu-nbd on P+2), openable by all hosts
files: ROOT/hosts/HOST/{watchdog.log,init.log,log/libvirtd.log,log/qemu/,run/virtlease/,
  etc-libvirt/hooks/qemu,etc-virtlease/config.yaml}, ROOT/etcd/etcd.log, ROOT/proxy/HOST.log
EOF
}

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${VL_LAB_ROOT:-/var/tmp/virtlease-lab}
ROOT=${ROOT%/}
case $ROOT in
/?*/?*) ;;
*) echo "lab: VL_LAB_ROOT=$ROOT: want an absolute path at least two levels deep" >&2; exit 2 ;;
esac
# virsh reaches a host at ROOT/hosts/host-X/run/libvirt/libvirt-sock: a unix
# socket path has at most 107 bytes.
if ((${#ROOT} + 38 > 107)); then
	echo "lab: VL_LAB_ROOT=$ROOT is too long for unix socket paths under it (max 69 bytes)" >&2
	exit 2
fi
case $ROOT in
/run/* | /etc/* | /var/lib/libvirt* | /var/lib/virtlease* | /var/log/libvirt* | /var/cache/libvirt*)
	echo "lab: VL_LAB_ROOT=$ROOT is hidden inside lab hosts by their bind mounts; use /var/tmp/…" >&2
	exit 2
	;;
esac

# libvirtd runs on CPU 0 only: the capabilities it caches include the CPUID of
# the CPU it ran on (leaf 0x1f gives that CPU's x2APIC ID), and a cached entry
# probed on another CPU is thrown away and probed again. QEMU guests are not
# pinned: libvirt gives them every online CPU.
# Its PATH is systemd's default, as on a real host: libvirtd hands it to the
# hook, and virsh shows it in a refused start's error.
LIBVIRTD=(env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin taskset -c 0 libvirtd)

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
	printf 'lab: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- settings

load_env() {
	PORT=${VL_LAB_PORT:-23790}
	NHOSTS=0
	ETCD_MEMBERS=1 # lab.env names it only when > 1
	HWDOG=0        # lab.env names it only when 1
	if [[ -f $ROOT/lab.env ]]; then
		# shellcheck disable=SC1091
		. "$ROOT/lab.env"
	fi
}

host_name() { printf 'host-%b' "\\$(printf '%03o' $((97 + $1)))"; }

host_index() {
	local i
	for ((i = 0; i < 26; i++)); do
		if [[ $(host_name "$i") == "$1" ]]; then
			echo "$i"
			return
		fi
	done
	die "unknown host '$1' (hosts are host-a, host-b, …)"
}

# All hosts that have a directory (a crashed or bigger earlier lab included).
all_hosts() {
	local d
	for d in "$ROOT"/hosts/host-?; do
		[[ -d $d ]] && basename "$d"
	done
	return 0
}

etcd_url() { echo "http://127.0.0.1:$PORT"; }
proxy_port() { echo $((PORT + 3 + $(host_index "$1"))); }
display_port() { echo $((PORT + 32 + 16 * $(host_index "$1"))); } # 8 VNC ports from here
migration_port() { echo $((PORT + 40 + 16 * $(host_index "$1"))); } # 8 migration ports from here
nbd_port() { echo $((PORT + 2)); }

# etcd members and the extra proxies (VL_LAB_ETCD_MEMBERS > 1): after the
# hosts' ranges, so that member 0 and a 1-member lab keep their ports.
extra_port() { echo $((PORT + 32 + 16 * NHOSTS)); }
member_client_port() {
	if (($1 == 0)); then echo "$PORT"; else echo $(($(extra_port) + 2 * ($1 - 1))); fi
}
member_peer_port() { echo $(($(member_client_port "$1") + 1)); }
member_url() { echo "http://127.0.0.1:$(member_client_port "$1")"; }
member_dir() {
	if (($1 == 0)); then echo "$ROOT/etcd"; else echo "$ROOT/etcd$1"; fi
}
member_name() {
	if ((ETCD_MEMBERS == 1)); then echo lab; else echo "lab$1"; fi
}
etcd_urls() {
	local m out=''
	for ((m = 0; m < ETCD_MEMBERS; m++)); do out+=${out:+,}$(member_url "$m"); done
	echo "$out"
}
# host HOST's proxy to member M: member 0's is the one of a 1-member lab.
member_proxy_port() {
	if (($2 == 0)); then
		proxy_port "$1"
	else
		echo $(($(extra_port) + 2 * (ETCD_MEMBERS - 1) + $(host_index "$1") * (ETCD_MEMBERS - 1) + $2 - 1))
	fi
}
proxy_file() { # proxy_file HOST M EXT
	if (($2 == 0)); then echo "$ROOT/proxy/$1.$3"; else echo "$ROOT/proxy/$1.$2.$3"; fi
}
proxy_endpoints() {
	local m out=''
	for ((m = 0; m < ETCD_MEMBERS; m++)); do out+=${out:+, }http://127.0.0.1:$(member_proxy_port "$1" "$m"); done
	echo "$out"
}
hdir() { echo "$ROOT/hosts/$1"; }
uri() { echo "qemu+unix:///system?socket=$(hdir "$1")/run/libvirt/libvirt-sock"; }

# ---------------------------------------------------------------- processes

# alive PID: the process exists and is not a zombie.
alive() {
	local pid=${1:-} st
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z && $st != X ]]
}

# ours PID: alive and its command line names something under ROOT (guards
# against a PID reused after a crash).
ours() {
	alive "$1" || return 1
	local c
	c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $c == *"$ROOT/"* ]]
}

pidof_file() {
	if [[ -f $1 ]]; then tr -dc '0-9' <"$1" || true; fi
}

# kill_wait SIGNAL TIMEOUT PID…: signal, then SIGKILL whatever is left after TIMEOUT s.
kill_wait() {
	local sig=$1 timeout=$2 pid i left
	shift 2
	[[ $# -gt 0 ]] || return 0
	kill "-$sig" "$@" 2>/dev/null || true
	kill -CONT "$@" 2>/dev/null || true # a frozen process acts on SIGTERM only once resumed
	for ((i = 0; i < timeout * 10; i++)); do
		left=()
		for pid in "$@"; do alive "$pid" && left+=("$pid"); done
		[[ ${#left[@]} -eq 0 ]] && return 0
		sleep 0.1
	done
	kill -KILL "${left[@]}" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		left=()
		for pid in "$@"; do alive "$pid" && left+=("$pid"); done
		[[ ${#left[@]} -eq 0 ]] && return 0
		sleep 0.1
	done
	log "still alive after SIGKILL: ${left[*]}"
}

# stop_pidfile FILE: end the process recorded in FILE if it is ours; remove FILE.
stop_pidfile() {
	local pid
	pid=$(pidof_file "$1")
	if [[ -n $pid ]] && ours "$pid"; then
		kill_wait TERM 5 "$pid"
	fi
	rm -f "$1"
}

# spawn PIDFILE LOGFILE CMD…: start CMD in its own session, detached from our
# stdio (a caller reading our output must not wait for the daemons) and from
# the lock's fd 9 (a daemon holding it would block every later lab command),
# and record its PID.
spawn() {
	local pidfile=$1 logfile=$2
	shift 2
	setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
	echo $! >"$pidfile"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
	local i
	for ((i = 0; i < ${2:-100}; i++)); do
		port_busy "$1" && return 0
		sleep 0.1
	done
	return 1
}

# host_pids HOST: every live process in HOST's PID namespace, its holder (the
# namespace's PID 1) included; zombies (not reaped yet) are dead. A PID namespace ends with its PID 1 (the
# kernel kills everything left in it), so a host whose holder is gone has no
# processes: nothing of a crashed lab can linger under a reused inode number.
host_pids() {
	local holder pidns p
	holder=$(holder_pid "$1")
	[[ -n $holder ]] || return 0
	pidns=$(readlink "/proc/$holder/ns/pid" 2>/dev/null) || return 0
	if [[ $pidns == "$(readlink /proc/self/ns/pid)" || $pidns == "$(readlink /proc/1/ns/pid 2>/dev/null)" ]]; then
		log "$1: its PID namespace $pidns is the machine's own: not touching it"
		return 0
	fi
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/ns/pid" 2>/dev/null) == "$pidns" ]] && alive "${p#/proc/}" && echo "${p#/proc/}"
	done
	return 0
}

# in_host_ns HOST PID: PID is one of HOST's processes. (No "host_pids | grep -q":
# under pipefail grep's early exit fails the pipeline with SIGPIPE.)
# shellcheck disable=SC2317 # no command uses it now; shellcheck calls an unused function after the final exit unreachable
in_host_ns() {
	local pids
	pids=$(host_pids "$1")
	[[ $'\n'$pids$'\n' == *$'\n'$2$'\n'* ]]
}

# host_comm_pids HOST COMM: HOST's processes named COMM (only HOST's).
host_comm_pids() {
	local p
	for p in $(host_pids "$1"); do
		[[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]] && echo "$p"
	done
	return 0
}

# holder_pid HOST: the PID (as this machine sees it) of HOST's namespace
# holder, PID 1 of its PID namespace; nothing when it is not running. The
# recorded namespaces and the host's own /etc/libvirt guard against a PID or
# a namespace inode number reused since.
# host_pid_of HOST NSPID: the PID, as this machine numbers it, of HOST's
# process numbered NSPID in HOST's own PID namespace (nothing when none).
host_pid_of() {
	local p
	for p in $(host_pids "$1"); do
		if [[ $(awk '$1 == "NSpid:" {print $NF}' "/proc/$p/status" 2>/dev/null) == "$2" ]]; then
			echo "$p"
			return 0
		fi
	done
	return 0
}

holder_pid() {
	local d pid
	d=$(hdir "$1")
	pid=$(pidof_file "$d/holder.pid")
	[[ -n $pid ]] && alive "$pid" && [[ -s $d/mntns && -s $d/pidns ]] &&
		[[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$(<"$d/mntns")" ]] &&
		[[ $(readlink "/proc/$pid/ns/pid" 2>/dev/null) == "$(<"$d/pidns")" ]] &&
		[[ $(awk '$1 == "NSpid:" {print $NF}' "/proc/$pid/status" 2>/dev/null) == 1 ]] &&
		[[ $(stat -Lc %d:%i "/proc/$pid/root/etc/libvirt" 2>/dev/null) == "$(stat -c %d:%i "$d/etc-libvirt" 2>/dev/null)" ]] &&
		echo "$pid"
	return 0
}

need_holder() {
	local pid
	pid=$(holder_pid "$1")
	[[ -n $pid ]] || die "$1 is not running (scripts/lab.sh start)"
	echo "$pid"
}

in_host() {
	local pid
	pid=$(need_holder "$1")
	shift
	nsenter -t "$pid" -m -u -p -- "$@" 9>&-
}

# ---------------------------------------------------------------- build

build() {
	mkdir -p "$ROOT/bin"
	local t0=$SECONDS
	(
		cd "$REPO"
		export GOFLAGS=${GOFLAGS:--mod=mod}
		# tool NAME: ./scripts/NAME built, or copied from $VL_LAB_TOOLS (the
		# e2e harness builds them once for all its labs)
		tool() {
			if [[ -n ${VL_LAB_TOOLS:-} && -x $VL_LAB_TOOLS/$1 ]]; then
				cp "$VL_LAB_TOOLS/$1" "$ROOT/bin/.$1.new"
			else
				go build -o "$ROOT/bin/.$1.new" "./scripts/$1"
			fi
		}
		tool etcd
		tool labproxy
		if ((HWDOG == 1)); then tool labhwdog; fi
		if [[ -n ${VL_BIN:-} ]]; then
			[[ -x $VL_BIN ]] || die "VL_BIN=$VL_BIN is not an executable file"
			cp "$VL_BIN" "$ROOT/bin/.virtlease.new"
		else
			CGO_ENABLED=0 go build -o "$ROOT/bin/.virtlease.new" ./cmd/virtlease ||
				die "building ./cmd/virtlease failed (set VL_BIN=/path/to/virtlease to use another binary)"
		fi
	) || exit 1
	# rename, never rewrite in place: running copies keep their file
	local b bins=(etcd labproxy virtlease)
	if ((HWDOG == 1)); then bins=(etcd labproxy labhwdog virtlease); fi
	for b in "${bins[@]}"; do mv -f "$ROOT/bin/.$b.new" "$ROOT/bin/$b"; done
	printf -v b '%s, ' "${bins[@]}"
	log "built ${b%, } into $ROOT/bin ($((SECONDS - t0)) s)"
}

# ---------------------------------------------------------------- etcd, nbd, proxies

start_etcd() {
	local pid
	if ((ETCD_MEMBERS > 1)); then
		start_etcd_cluster
		return
	fi
	pid=$(pidof_file "$ROOT/etcd/etcd.pid")
	if [[ -n $pid ]] && ours "$pid"; then
		return 0
	fi
	port_busy "$PORT" && die "port $PORT is in use by something else (another lab? set VL_LAB_PORT)"
	port_busy $((PORT + 1)) && die "port $((PORT + 1)) is in use by something else (set VL_LAB_PORT)"
	rm -rf "$ROOT/etcd"
	mkdir -p "$ROOT/etcd"
	spawn "$ROOT/etcd/etcd.pid" "$ROOT/etcd/etcd.log" "$ROOT/bin/etcd" \
		--name lab --data-dir "$ROOT/etcd/data" \
		--listen-client-urls "$(etcd_url)" --advertise-client-urls "$(etcd_url)" \
		--listen-peer-urls "http://127.0.0.1:$((PORT + 1))" \
		--initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
		--initial-cluster "lab=http://127.0.0.1:$((PORT + 1))" \
		--initial-cluster-state new --log-level warn
	local i
	for ((i = 0; i < 300; i++)); do
		if ETCDCTL_API=3 etcdctl --endpoints "$(etcd_url)" --dial-timeout 1s --command-timeout 2s \
			endpoint health >/dev/null 2>&1; then
			log "etcd healthy at $(etcd_url)"
			return 0
		fi
		alive "$(pidof_file "$ROOT/etcd/etcd.pid")" || die "etcd exited: see $ROOT/etcd/etcd.log"
		sleep 0.1
	done
	die "etcd not healthy after 30 s: see $ROOT/etcd/etcd.log"
}

# member_pid M: member M's PID if it runs (ours), else nothing.
member_pid() {
	local pid
	pid=$(pidof_file "$(member_dir "$1")/etcd.pid")
	if [[ -n $pid ]] && ours "$pid"; then echo "$pid"; fi
	return 0
}

need_member() {
	if [[ ! $1 =~ ^[0-9]$ ]] || (($1 >= ETCD_MEMBERS)); then die "etcd member '$1': want 0…$((ETCD_MEMBERS - 1))"; fi
}

# spawn_member M: start member M on its data dir (a new one when there is
# none: --initial-cluster* only count then).
spawn_member() {
	local m=$1 d cluster='' i
	d=$(member_dir "$m")
	for ((i = 0; i < ETCD_MEMBERS; i++)); do
		cluster+=${cluster:+,}$(member_name "$i")=http://127.0.0.1:$(member_peer_port "$i")
	done
	port_busy "$(member_client_port "$m")" && die "port $(member_client_port "$m") (etcd member $m) is in use by something else (set VL_LAB_PORT)"
	port_busy "$(member_peer_port "$m")" && die "port $(member_peer_port "$m") (etcd member $m's peer) is in use by something else (set VL_LAB_PORT)"
	mkdir -p "$d"
	spawn "$d/etcd.pid" "$d/etcd.log" "$ROOT/bin/etcd" \
		--name "$(member_name "$m")" --data-dir "$d/data" \
		--listen-client-urls "$(member_url "$m")" --advertise-client-urls "$(member_url "$m")" \
		--listen-peer-urls "http://127.0.0.1:$(member_peer_port "$m")" \
		--initial-advertise-peer-urls "http://127.0.0.1:$(member_peer_port "$m")" \
		--initial-cluster "$cluster" --initial-cluster-token "lab-$PORT" \
		--initial-cluster-state new --log-level warn
}

# wait_member M: until member M answers a health check (needs a quorum).
wait_member() {
	local m=$1 i
	for ((i = 0; i < 300; i++)); do
		if ETCDCTL_API=3 etcdctl --endpoints "$(member_url "$m")" --dial-timeout 1s --command-timeout 2s \
			endpoint health >/dev/null 2>&1; then
			return 0
		fi
		[[ -n $(member_pid "$m") ]] || die "etcd member $m exited: see $(member_dir "$m")/etcd.log"
		sleep 0.1
	done
	die "etcd member $m not healthy after 30 s: see $(member_dir "$m")/etcd.log"
}

# start_etcd_cluster: all members; a fresh cluster when none runs, else the
# missing members rejoin on their data dirs.
start_etcd_cluster() {
	local m any=''
	for ((m = 0; m < ETCD_MEMBERS; m++)); do [[ -n $(member_pid "$m") ]] && any=1; done
	for ((m = 0; m < ETCD_MEMBERS; m++)); do
		[[ -n $(member_pid "$m") ]] && continue
		[[ -z $any ]] && rm -rf "$(member_dir "$m")"
		spawn_member "$m"
	done
	for ((m = 0; m < ETCD_MEMBERS; m++)); do wait_member "$m"; done
	log "etcd cluster of $ETCD_MEMBERS healthy at $(etcd_urls)"
}

# etcd_leader: the index of the member the members say leads.
etcd_leader() {
	local m out
	out=$(ETCDCTL_API=3 etcdctl --endpoints "$(etcd_urls)" --dial-timeout 1s --command-timeout 2s \
		endpoint status -w simple 2>/dev/null || true)
	for ((m = 0; m < ETCD_MEMBERS; m++)); do
		# "URL, ID, VERSION, DB SIZE, IS LEADER, …"
		if awk -F', ' -v u="$(member_url "$m")" '$1 == u && $5 == "true" {f = 1} END {exit !f}' <<<"$out"; then
			echo "$m"
			return 0
		fi
	done
	die "no etcd member says it leads (see etcdctl --endpoints $(etcd_urls) endpoint status)"
}

start_nbd() {
	mkdir -p "$ROOT/shared"
	[[ -f $ROOT/shared/vm1.qcow2 ]] || qemu-img create -q -f qcow2 "$ROOT/shared/vm1.qcow2" 16M
	[[ -f $ROOT/shared/vm2.qcow2 ]] || qemu-img create -q -f qcow2 "$ROOT/shared/vm2.qcow2" 16M
	local pid
	pid=$(pidof_file "$ROOT/nbd.pid")
	if [[ -n $pid ]] && ours "$pid"; then
		return 0
	fi
	port_busy "$(nbd_port)" && die "port $(nbd_port) is in use by something else (set VL_LAB_PORT)"
	spawn "$ROOT/nbd.pid" "$ROOT/nbd.log" qemu-nbd --shared=4 --persistent \
		--bind 127.0.0.1 --port "$(nbd_port)" --format qcow2 --export-name vm2 \
		"$ROOT/shared/vm2.qcow2"
	wait_port "$(nbd_port)" 100 || die "qemu-nbd not listening on $(nbd_port): see $ROOT/nbd.log"
}

start_proxy() {
	local h=$1 p pid delay=${2:-} m
	mkdir -p "$ROOT/proxy"
	for ((m = 1; m < ETCD_MEMBERS; m++)); do start_member_proxy "$h" "$m" "$delay"; done
	pid=$(pidof_file "$ROOT/proxy/$h.pid")
	if [[ -n $pid ]] && ours "$pid"; then
		return 0
	fi
	p=$(proxy_port "$h")
	port_busy "$p" && die "port $p ($h's proxy) is in use by something else (set VL_LAB_PORT)"
	spawn "$ROOT/proxy/$h.pid" "$ROOT/proxy/$h.log" "$ROOT/bin/labproxy" \
		-listen "127.0.0.1:$p" -to "127.0.0.1:$PORT" ${delay:+-delay "$delay"}
	wait_port "$p" 50 || die "$h's proxy not listening on $p: see $ROOT/proxy/$h.log"
}

# start_member_proxy HOST M [DELAY]: HOST's proxy to etcd member M > 0.
start_member_proxy() {
	local h=$1 m=$2 delay=${3:-} p pid
	pid=$(pidof_file "$(proxy_file "$h" "$m" pid)")
	if [[ -n $pid ]] && ours "$pid"; then
		return 0
	fi
	p=$(member_proxy_port "$h" "$m")
	port_busy "$p" && die "port $p ($h's proxy to etcd member $m) is in use by something else (set VL_LAB_PORT)"
	spawn "$(proxy_file "$h" "$m" pid)" "$(proxy_file "$h" "$m" log)" "$ROOT/bin/labproxy" \
		-listen "127.0.0.1:$p" -to "127.0.0.1:$(member_client_port "$m")" ${delay:+-delay "$delay"}
	wait_port "$p" 50 || die "$h's proxy to etcd member $m not listening on $p: see $(proxy_file "$h" "$m" log)"
}

proxy_pid() {
	local pid
	pid=$(pidof_file "$ROOT/proxy/$1.pid")
	if [[ -z $pid ]] || ! ours "$pid"; then die "$1's proxy is not running"; fi
	echo "$pid"
}

# proxy_pids HOST: the PIDs of HOST's proxies, one per etcd member (each must run).
proxy_pids() {
	local m pid
	proxy_pid "$1"
	for ((m = 1; m < ETCD_MEMBERS; m++)); do
		pid=$(pidof_file "$(proxy_file "$1" "$m" pid)")
		if [[ -z $pid ]] || ! ours "$pid"; then die "$1's proxy to etcd member $m is not running"; fi
		echo "$pid"
	done
}

# ---------------------------------------------------------------- domains

render_domains() {
	mkdir -p "$ROOT/domains"
	local t=$REPO/testdata/lab
	# VNC on a unix socket in the host's own /var/lib/libvirt, not on TCP: every lab host
	# (and every lab side by side) shares one network namespace, and the 5900+ ports each
	# libvirtd picks on its own collide ("Failed to find an available port").
	local vnc="s|<graphics type='vnc'[^>]*/>|<graphics type='vnc'><listen type='socket'/></graphics>|"
	sed -e "s|@NAME@|vm1|; s|@UUID@|5d0e1a5e-0000-4000-8000-000000000001|; s|@DISK@|$ROOT/shared/vm1.qcow2|" -e "$vnc" \
		"$t/domain-file.xml.in" >"$ROOT/domains/vm1.xml"
	sed -e "s|@NAME@|vm1-copy|; s|@UUID@|5d0e1a5e-0000-4000-8000-0000000000c1|; s|@DISK@|$ROOT/shared/vm1.qcow2|" -e "$vnc" \
		"$t/domain-file.xml.in" >"$ROOT/domains/vm1-copy.xml"
	sed -e "s|@NAME@|vm2|; s|@UUID@|5d0e1a5e-0000-4000-8000-000000000002|; s|@EXPORT@|vm2|; s|@NBDPORT@|$(nbd_port)|" -e "$vnc" \
		"$t/domain-nbd.xml.in" >"$ROOT/domains/vm2.xml"
}

# ---------------------------------------------------------------- hosts

write_host_files() {
	local h=$1 d
	d=$(hdir "$h")
	mkdir -p "$d"/{etc-libvirt/hooks,etc-libvirt/qemu/networks/autostart,etc-libvirt/nwfilter,etc-virtlease,run,lib,lib-virtlease,log,cache}
	if [[ -d /etc/libvirt/nwfilter ]]; then cp -a /etc/libvirt/nwfilter/. "$d/etc-libvirt/nwfilter/"; fi
	cat >"$d/etc-libvirt/libvirtd.conf" <<EOF
# lab host $h (scripts/lab.sh)
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
	cat >"$d/etc-libvirt/qemu.conf" <<EOF
# lab host $h (scripts/lab.sh): libvirt's own namespaces (each QEMU in a mount
# namespace of its own, as on a real host); no relabelling or cgroups in a lab host
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
vnc_listen = "127.0.0.1"
# this host's own ranges (all lab hosts share one network: libvirt's defaults collide)
remote_display_port_min = $(display_port "$h")
remote_display_port_max = $(($(display_port "$h") + 7))
migration_port_min = $(migration_port "$h")
migration_port_max = $(($(migration_port "$h") + 7))
EOF
	: >"$d/etc-libvirt/virtlogd.conf"
	: >"$d/etc-libvirt/libvirt.conf"
	local hwdog=
	if ((HWDOG == 1)); then
		mkfifo "$d/run/hwdog.fifo"
		hwdog=$'\n  hardware_watchdog: /run/hwdog.fifo # lab stand-in, read by scripts/labhwdog'
	fi
	cat >"$d/etc-virtlease/config.yaml" <<EOF
# lab host $h (scripts/lab.sh): etcd through this host's own proxy
host: $h
prefix: /virtlease
etcd:
  endpoints: [$(proxy_endpoints "$h")]
  dial_timeout: 2s
session:
  ttl: ${VL_LAB_TTL:-10s}
  renew_interval: ${VL_LAB_RENEW:-1s}
fence:
  margin: ${VL_LAB_MARGIN:-3s}$hwdog
libvirt:
  uri: qemu:///system
hook:
  timeout: ${VL_LAB_HOOK_TIMEOUT:-5s}
ha:
  max_restarts: ${VL_LAB_HA_MAX_RESTARTS:-3}
  # live evacuation (drain --evacuate): every host's libvirtd socket is
  # reachable from every host's namespace; memory goes over loopback
  migrate_uri: qemu+unix:///system?socket=$ROOT/hosts/{host}/run/libvirt/libvirt-sock
  migrate_data_uri: tcp://127.0.0.1
EOF
	install_hook "$h"
	cat >"$d/init.sh" <<EOF
#!/bin/sh
# lab host $h: PID 1 of 'unshare -p -m -u --fork --mount-proc' (scripts/lab.sh);
# holds the namespaces. lab.sh records this process's PID as the machine sees it.
set -eu
readlink /proc/self/ns/mnt >'$d/mntns'
readlink /proc/self/ns/uts >'$d/utsns'
readlink /proc/self/ns/pid >'$d/pidns.new'
mv -f '$d/pidns.new' '$d/pidns'
echo '$h' >/proc/sys/kernel/hostname
mount --make-rprivate /
mount --bind '$d/etc-libvirt' /etc/libvirt
mount --bind '$d/etc-virtlease' /etc/virtlease
mount --bind '$d/run' /run
mount --bind '$d/lib' /var/lib/libvirt
mount --bind '$d/lib-virtlease' /var/lib/virtlease
mount --bind '$d/log' /var/log/libvirt
mount --bind '$d/cache' /var/cache/libvirt
mkdir -p /run/libvirt /run/virtlease
virtlogd -d
${LIBVIRTD[*]} -d
echo "\$(date +%T) $h: virtlogd and libvirtd started"
# PID 1 reaps every orphan, as init does on a real host: daemons and QEMUs are
# reparented here, and an unreaped QEMU would look alive to libvirt's kill(pid, 0).
exec perl -e '\$0 = "lab-init"; while (1) { sleep 1 if wait() == -1 }'
EOF
}

install_hook() {
	local d
	d=$(hdir "$1")
	cp "$ROOT/bin/virtlease" "$d/etc-libvirt/hooks/.qemu.new"
	mv -f "$d/etc-libvirt/hooks/.qemu.new" "$d/etc-libvirt/hooks/qemu"
}

# stop_hosts HOST…: end every process in these hosts' namespaces, guests first,
# all hosts at once.
stop_hosts() {
	local h d pids qemus=() others=() holders=() holder p nq no
	for h in "$@"; do
		mapfile -t pids < <(host_pids "$h")
		nq=${#qemus[@]} no=${#others[@]}
		holder=$(holder_pid "$h")
		[[ -n $holder ]] && holders+=("$holder")
		for p in "${pids[@]}"; do
			[[ $p == "$$" || $p == "$holder" ]] && continue
			if [[ $(cat "/proc/$p/comm" 2>/dev/null) == qemu-system-* ]]; then qemus+=("$p"); else others+=("$p"); fi
		done
		if ((${#qemus[@]} + ${#others[@]} > nq + no)); then
			log "$h: stopping $((${#qemus[@]} - nq)) guest(s) and $((${#others[@]} - no)) other process(es)"
		fi
	done
	kill_wait KILL 5 "${qemus[@]}"
	kill_wait TERM 5 "${others[@]}"
	# PID 1 of a PID namespace ignores SIGTERM; its end takes whatever is left.
	kill_wait KILL 5 "${holders[@]}"
	for h in "$@"; do
		d=$(hdir "$h")
		rm -f "$d/holder.pid" "$d/pidns" "$d/watchdog.pid" "$d/run/libvirtd.pid" "$d/run/virtlogd.pid"
	done
}

# start_host HOST: a fresh host unless it is running already.
start_host() {
	local h=$1 d i
	d=$(hdir "$h")
	if [[ -n $(holder_pid "$h") ]]; then
		install_hook "$h"
		return 0
	fi
	stop_hosts "$h" # leftovers of a crashed run: same namespaces, by PID
	if grep -qF " $d/" /proc/self/mountinfo; then die "$d is mounted in this namespace: not removing it"; fi
	rm -rf "$d"
	write_host_files "$h"
	mkdir -p /etc/virtlease /var/lib/virtlease # mount points for the bind mounts (stay empty on the machine)
	setsid unshare -p -m -u --fork --mount-proc --propagation private -- /bin/sh "$d/init.sh" </dev/null >>"$d/init.log" 2>&1 9>&- &
	local pidns p
	for ((i = 0; i < 100; i++)); do
		if [[ -s $d/pidns ]]; then
			pidns=$(<"$d/pidns")
			for p in /proc/[0-9]*; do
				[[ $(readlink "$p/ns/pid" 2>/dev/null) == "$pidns" ]] || continue
				[[ $(awk '$1 == "NSpid:" {print $NF}' "$p/status" 2>/dev/null) == 1 ]] || continue
				echo "${p#/proc/}" >"$d/holder.pid"
				[[ -n $(holder_pid "$h") ]] && return 0
			done
		fi
		sleep 0.1
	done
	die "$h did not come up: see $d/init.log"
}

wait_libvirtd() {
	local h=$1 i
	for ((i = 0; i < 300; i++)); do
		if virsh -q -c "$(uri "$h")" version >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	die "$h: libvirtd does not answer after 30 s: see $(hdir "$h")/log/libvirtd.log and $(hdir "$h")/init.log"
}

# libvirtd probes each QEMU binary (~4 s each, on first use) and caches the
# result in /var/cache/libvirt/qemu/capabilities; it re-checks a cached entry
# against the binaries and the kernel, so seeding a new host from another
# host's cache is safe and saves the probe.
CAPS=qemu/capabilities
save_caps() {
	local seed=${VL_LAB_CAPS_CACHE:-$ROOT/capscache} src
	src=$(hdir "$1")/cache/$CAPS
	compgen -G "$src/*.xml" >/dev/null || return 0
	mkdir -p "$seed/.new.$$"
	cp "$src"/*.xml "$seed/.new.$$/" # then rename: a concurrent lab never reads half a file
	mv -f "$seed/.new.$$"/*.xml "$seed/"
	rmdir "$seed/.new.$$"
}
seed_caps() {
	local seed=${VL_LAB_CAPS_CACHE:-$ROOT/capscache} dst
	dst=$(hdir "$1")/cache/$CAPS
	compgen -G "$seed/*.xml" >/dev/null || return 0
	compgen -G "$dst/*.xml" >/dev/null && return 0
	mkdir -p "$dst"
	cp "$seed"/*.xml "$dst/"
}

define_domains() {
	local h=$1 x
	for x in vm1 vm1-copy vm2; do
		virsh -q -c "$(uri "$h")" define "$ROOT/domains/$x.xml" >/dev/null ||
			die "$h: virsh define $ROOT/domains/$x.xml failed"
	done
}

# start_hwdog HOST: the supervisor reading HOST's stand-in watchdog device
# (VL_LAB_HWDOG=1). It runs outside the host, so a reset does not end it;
# the virtlease watchdog's open of the FIFO waits for it.
start_hwdog() {
	local h=$1 d pid
	((HWDOG == 1)) || return 0
	d=$(hdir "$h")
	mkdir -p "$ROOT/hwdog"
	pid=$(pidof_file "$ROOT/hwdog/$h.pid")
	if [[ -n $pid ]] && ours "$pid"; then return 0; fi
	[[ -p $d/run/hwdog.fifo ]] || die "$h: $d/run/hwdog.fifo is not a FIFO (a lab started without VL_LAB_HWDOG=1?)"
	spawn "$ROOT/hwdog/$h.pid" "$ROOT/hwdog/$h.log" "$ROOT/bin/labhwdog" \
		-fifo "$d/run/hwdog.fifo" -host-dir "$d" -config "$d/etc-virtlease/config.yaml"
}

start_watchdog() {
	local h=$1 d holder pid
	d=$(hdir "$h")
	pid=$(pidof_file "$d/watchdog.pid")
	if [[ -n $pid ]] && ours "$pid"; then return 0; fi
	holder=$(need_holder "$h")
	start_hwdog "$h"
	# In the host's PID namespace, in a mount namespace of its own (as the
	# unit's ProtectSystem/PrivateTmp make it on a real host). Started in the
	# background from inside, so that its parent is the host's PID 1, as on a
	# real host: an nsenter left waiting outside would stop itself whenever
	# the watchdog is SIGSTOPped (a fault) and, never continued, leave the
	# watchdog unreaped, so that the host's PID namespace could never end.
	# Its PID as this machine numbers it is recorded, so that signals reach it.
	local nspid
	nspid=$(nsenter -t "$holder" -m -u -p -- /bin/sh -c \
		'setsid unshare -m --propagation slave -- env VIRTLEASE_CONFIG=/etc/virtlease/config.yaml "$1" watchdog </dev/null >>"$2" 2>&1 & echo $!' \
		sh "$ROOT/bin/virtlease" "$d/watchdog.log" 9>&-) || true
	pid=
	[[ $nspid =~ ^[0-9]+$ ]] && pid=$(host_pid_of "$h" "$nspid")
	if [[ -n $pid ]]; then echo "$pid" >"$d/watchdog.pid"; else rm -f "$d/watchdog.pid"; fi
	sleep 0.3
	if ! alive "$pid"; then
		rm -f "$d/watchdog.pid"
		log "$h: virtlease watchdog exited at once (going on without it): $(tail -n 3 "$d/watchdog.log" | tr '\n' ' ')"
		return 0
	fi
	# the hook refuses every start until the watchdog holds a session: wait for it
	local i s
	for ((i = 0; i < 150; i++)); do
		s=$(cat "$d/run/virtlease/session" 2>/dev/null || true)
		if [[ $s =~ \"state\"[[:space:]]*:[[:space:]]*\"ok\" ]]; then return 0; fi
		if ! alive "$pid"; then
			rm -f "$d/watchdog.pid"
			log "$h: virtlease watchdog exited (going on without it): $(tail -n 3 "$d/watchdog.log" | tr '\n' ' ')"
			return 0
		fi
		sleep 0.1
	done
	log "$h: warning: no session with state ok in /run/virtlease/session after 15 s (see $d/watchdog.log)"
}

stop_watchdog() {
	local d pid
	d=$(hdir "$1")
	pid=$(pidof_file "$d/watchdog.pid")
	if [[ -n $pid ]] && ours "$pid"; then
		kill_wait "${2:-TERM}" 15 "$pid"
	fi
	rm -f "$d/watchdog.pid"
}

# ---------------------------------------------------------------- commands

# cmd_boot HOST [--cold]: after a power loss or a reset (every process of
# the host killed, its namespace holder kept), start what is not running.
cmd_boot() {
	local h=$1 d holder p f
	d=$(hdir "$h")
	host_index "$h" >/dev/null
	holder=$(need_holder "$h")
	if [[ ${2:-} == --cold ]]; then
		# a reboot: /run is a tmpfs, nothing in it survives (same boot ID
		# here: one kernel runs every lab host)
		for p in $(host_pids "$h"); do
			[[ $p == "$holder" ]] || die "boot --cold: $h still runs pid $p ($(cat "/proc/$p/comm" 2>/dev/null))"
		done
		for f in "$d/run"/* "$d/run"/.[!.]*; do
			[[ -e $f && $f != "$d/run/hwdog.fifo" ]] && rm -rf "$f"
		done
		mkdir -p "$d/run/libvirt" "$d/run/virtlease"
	elif [[ -n ${2:-} ]]; then
		die "usage: lab.sh boot HOST [--cold]"
	fi
	if [[ -z $(host_comm_pids "$h" virtlogd) ]]; then
		in_host "$h" virtlogd -d </dev/null >>"$d/init.log" 2>&1
	fi
	if [[ -z $(host_comm_pids "$h" libvirtd) ]]; then
		rm -f "$d/run/libvirtd.pid"
		in_host "$h" "${LIBVIRTD[@]}" -d </dev/null >>"$d/init.log" 2>&1
	fi
	wait_libvirtd "$h"
	start_hwdog "$h"
	if [[ ${VL_LAB_NO_WATCHDOG:-} != 1 ]]; then start_watchdog "$h"; fi
}

lock() {
	mkdir -p "$(dirname "$ROOT")"
	exec 9>>"$ROOT.lock"
	flock -w "${VL_LAB_LOCK_WAIT:-600}" 9 || die "another lab command holds $ROOT.lock"
}

cmd_start() {
	local n=${1:-2} t0=$SECONDS h i
	[[ $n =~ ^[1-9][0-9]?$ && $n -le 26 ]] || die "start: N must be 1…26"
	[[ $(id -u) == 0 ]] || die "start: must run as root (namespaces, mounts, libvirtd)"
	for i in go unshare nsenter setsid flock libvirtd virtlogd virsh qemu-system-x86_64 qemu-img qemu-nbd etcdctl; do
		command -v "$i" >/dev/null || die "start: '$i' not found (sudo ./scripts/test.sh installs the packages)"
	done
	lock
	load_env
	if [[ -f $ROOT/lab.env && -n $(pidof_file "$ROOT/etcd/etcd.pid") ]] && ours "$(pidof_file "$ROOT/etcd/etcd.pid")" &&
		[[ $PORT != "${VL_LAB_PORT:-$PORT}" ]]; then
		die "the lab in $ROOT runs on port $PORT; stop it first to change VL_LAB_PORT"
	fi
	PORT=${VL_LAB_PORT:-$PORT}
	local members=${VL_LAB_ETCD_MEMBERS:-$ETCD_MEMBERS} hw=${VL_LAB_HWDOG:-$HWDOG} running=''
	[[ $members =~ ^[1-9]$ ]] || die "start: VL_LAB_ETCD_MEMBERS=$members: want 1…9"
	[[ $hw == 1 ]] || hw=0
	[[ -n $(member_pid 0) ]] && running=1
	if [[ -n $running ]] && ((members != ETCD_MEMBERS || hw != HWDOG)); then
		die "the lab in $ROOT runs with $ETCD_MEMBERS etcd member(s), VL_LAB_HWDOG=$HWDOG; stop it first to change them"
	fi
	if [[ -n $running ]] && ((members > 1 && n != NHOSTS)); then
		die "the lab in $ROOT runs $NHOSTS host(s) and $members etcd members (their ports follow the hosts'); stop it first to change N"
	fi
	ETCD_MEMBERS=$members HWDOG=$hw NHOSTS=$n
	mkdir -p "$ROOT"/{hosts,proxy}
	build
	printf 'PORT=%s\nNHOSTS=%s\n' "$PORT" "$n" >"$ROOT/lab.env"
	if ((ETCD_MEMBERS > 1)); then printf 'ETCD_MEMBERS=%s\n' "$ETCD_MEMBERS" >>"$ROOT/lab.env"; fi
	if ((HWDOG == 1)); then printf 'HWDOG=1\n' >>"$ROOT/lab.env"; fi
	for h in $(all_hosts); do
		if (($(host_index "$h") >= n)); then
			stop_pidfile "$ROOT/hwdog/$h.pid"
			stop_hosts "$h"
			stop_pidfile "$ROOT/proxy/$h.pid"
			for i in "$ROOT/proxy/$h".*.pid; do [[ -f $i ]] && stop_pidfile "$i"; done
		fi
	done
	start_etcd
	start_nbd
	render_domains
	for ((i = 0; i < n; i++)); do
		h=$(host_name "$i")
		start_proxy "$h"
		start_host "$h"
	done
	for ((i = 0; i < n; i++)); do
		h=$(host_name "$i")
		seed_caps "$h"
		wait_libvirtd "$h"
		define_domains "$h"
		if ((i == 0)); then save_caps "$h"; fi
		if [[ ${VL_LAB_NO_WATCHDOG:-} != 1 ]]; then start_watchdog "$h"; fi
	done
	log "lab up: $n host(s) in $ROOT, etcd $(etcd_urls) ($((SECONDS - t0)) s)"
	cat <<EOF
lab: $n host(s) in $ROOT; etcd at $(etcd_urls); domains vm1, vm1-copy (same qcow2 file), vm2 (nbd) on every host
  etcd:   ETCDCTL_API=3 etcdctl --endpoints $(etcd_urls) get --prefix /virtlease
EOF
	for ((i = 0; i < n; i++)); do
		h=$(host_name "$i")
		echo "  $h: virsh -c '$(uri "$h")' list --all   (or scripts/lab.sh virsh $h list --all)"
	done
	echo "  aliases: eval \"\$(VL_LAB_ROOT=$ROOT scripts/lab.sh env)\"; stop: scripts/lab.sh stop"
}

cmd_stop() {
	local purge=${1:-} h t0=$SECONDS
	[[ -z $purge || $purge == --purge ]] || die "stop: unknown argument $purge"
	[[ -d $ROOT ]] || return 0
	lock
	load_env
	# the watchdog devices' supervisors first: a host going down is no reset
	for h in "$ROOT"/hwdog/*.pid; do [[ -f $h ]] && stop_pidfile "$h"; done
	# shellcheck disable=SC2046
	stop_hosts $(all_hosts)
	for h in "$ROOT"/proxy/*.pid; do [[ -f $h ]] && stop_pidfile "$h"; done
	stop_pidfile "$ROOT/nbd.pid"
	stop_pidfile "$ROOT/etcd/etcd.pid"
	for h in "$ROOT"/etcd[1-9]/etcd.pid; do [[ -f $h ]] && stop_pidfile "$h"; done
	if grep -qF " $ROOT/" /proc/self/mountinfo; then log "warning: mounts under $ROOT remain in this namespace"; fi
	if [[ $purge == --purge ]]; then
		rm -rf "$ROOT"
		rm -f "$ROOT.lock"
	fi
	log "lab stopped ($((SECONDS - t0)) s)"
}

state() {
	local pid=$1 s
	if [[ -z $pid ]] || ! alive "$pid"; then
		echo "down"
		return
	fi
	s=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
	if [[ $s == T ]]; then echo "FROZEN pid $pid"; else echo "up pid $pid"; fi
}

cmd_status() {
	local h d pid n p
	load_env
	[[ -d $ROOT ]] || {
		echo "no lab in $ROOT"
		return 0
	}
	pid=$(pidof_file "$ROOT/etcd/etcd.pid")
	if [[ -n $pid ]] && ! ours "$pid"; then pid=; fi
	echo "lab $ROOT, port $PORT, started with $NHOSTS host(s)"
	echo "  etcd $(etcd_url): $(state "$pid")"
	for ((n = 1; n < ETCD_MEMBERS; n++)); do
		echo "  etcd member $n $(member_url "$n"): $(state "$(member_pid "$n")")"
	done
	pid=$(pidof_file "$ROOT/nbd.pid")
	if [[ -n $pid ]] && ! ours "$pid"; then pid=; fi
	echo "  qemu-nbd 127.0.0.1:$(nbd_port): $(state "$pid")"
	for h in $(all_hosts); do
		d=$(hdir "$h")
		echo "  $h:"
		echo "    namespace holder: $(state "$(holder_pid "$h")")"
		pid=$(pidof_file "$ROOT/proxy/$h.pid")
		if [[ -n $pid ]] && ! ours "$pid"; then pid=; fi
		echo "    proxy 127.0.0.1:$(proxy_port "$h"): $(state "$pid")"
		for ((n = 1; n < ETCD_MEMBERS; n++)); do
			pid=$(pidof_file "$(proxy_file "$h" "$n" pid)")
			if [[ -n $pid ]] && ! ours "$pid"; then pid=; fi
			echo "    proxy 127.0.0.1:$(member_proxy_port "$h" "$n") to member $n: $(state "$pid")"
		done
		if ((HWDOG == 1)); then
			pid=$(pidof_file "$ROOT/hwdog/$h.pid")
			if [[ -n $pid ]] && ! ours "$pid"; then pid=; fi
			echo "    watchdog device supervisor: $(state "$pid")"
		fi
		# libvirt's own pid files hold PIDs of the host's PID namespace
		echo "    libvirtd: $(state "$(host_comm_pids "$h" libvirtd | head -n 1)")"
		echo "    virtlogd: $(state "$(host_comm_pids "$h" virtlogd | head -n 1)")"
		echo "    watchdog: $(state "$(pidof_file "$d/watchdog.pid")")"
		n=0
		for p in $(host_pids "$h"); do
			[[ $(cat "/proc/$p/comm" 2>/dev/null) == qemu-system-* ]] && n=$((n + 1))
		done
		echo "    qemu processes: $n"
	done
}

cmd_env() {
	local h
	load_env
	echo "export VL_LAB_ROOT=$ROOT"
	echo "export VL_LAB_PORT=$PORT"
	echo "export ETCDCTL_API=3"
	echo "alias lab-etcdctl='ETCDCTL_API=3 etcdctl --endpoints $(etcd_urls)'"
	for h in $(all_hosts); do
		echo "alias virsh-$h='virsh -c \"$(uri "$h")\"'"
	done
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	case $cmd in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status ;;
	env) cmd_env ;;
	hosts)
		load_env
		all_hosts
		;;
	virsh)
		[[ $# -ge 1 ]] || die "usage: lab.sh virsh HOST ARGS…"
		load_env
		host_index "$1" >/dev/null
		local h=$1
		shift
		exec virsh -c "$(uri "$h")" "$@"
		;;
	exec)
		[[ $# -ge 2 ]] || die "usage: lab.sh exec HOST CMD…"
		load_env
		local pid
		pid=$(need_holder "$1")
		shift
		exec nsenter -t "$pid" -m -u -p -- "$@"
		;;
	freeze | thaw | cut)
		[[ $# -eq 1 ]] || die "usage: lab.sh $cmd HOST"
		load_env
		local pids m
		pids=$(proxy_pids "$1")
		# shellcheck disable=SC2086 # one signal for all of the host's proxies at once
		case $cmd in
		freeze) kill -STOP $pids ;;
		thaw) kill -CONT $pids ;;
		cut)
			kill -KILL $pids
			rm -f "$ROOT/proxy/$1.pid"
			for ((m = 1; m < ETCD_MEMBERS; m++)); do rm -f "$(proxy_file "$1" "$m" pid)"; done
			;;
		esac
		;;
	heal)
		[[ $# -ge 1 && $# -le 2 ]] || die "usage: lab.sh heal HOST [DELAY]"
		load_env
		lock
		host_index "$1" >/dev/null
		local m
		stop_pidfile "$ROOT/proxy/$1.pid"
		for ((m = 1; m < ETCD_MEMBERS; m++)); do stop_pidfile "$(proxy_file "$1" "$m" pid)"; done
		start_proxy "$1" "${2:-}"
		;;
	boot)
		[[ $# -ge 1 && $# -le 2 ]] || die "usage: lab.sh boot HOST [--cold]"
		load_env
		lock
		cmd_boot "$@"
		;;
	etcd-kill | etcd-start | etcd-stop | etcd-cont)
		[[ $# -eq 1 ]] || die "usage: lab.sh $cmd N"
		load_env
		need_member "$1"
		local pid
		case $cmd in
		etcd-start)
			lock
			[[ -n $(member_pid "$1") ]] && return 0
			[[ -d $(member_dir "$1")/data ]] || die "etcd member $1 has no data dir: scripts/lab.sh start"
			spawn_member "$1"
			wait_member "$1"
			;;
		*)
			pid=$(member_pid "$1")
			[[ -n $pid ]] || die "etcd member $1 is not running"
			case $cmd in
			etcd-kill)
				kill_wait KILL 5 "$pid"
				rm -f "$(member_dir "$1")/etcd.pid"
				;;
			etcd-stop) kill -STOP "$pid" ;;
			etcd-cont) kill -CONT "$pid" ;;
			esac
			;;
		esac
		;;
	etcd-leader)
		load_env
		etcd_leader
		;;
	etcd-endpoints)
		load_env
		etcd_urls
		;;
	restart-libvirtd)
		[[ $# -ge 1 && $# -le 2 ]] || die "usage: lab.sh restart-libvirtd HOST [--kill]"
		load_env
		lock
		local h=$1 d sig=TERM
		[[ ${2:-} == --kill ]] && sig=KILL
		d=$(hdir "$h")
		local pids
		mapfile -t pids < <(host_comm_pids "$h" libvirtd)
		kill_wait "$sig" 30 "${pids[@]}"
		rm -f "$d/run/libvirtd.pid"
		in_host "$h" "${LIBVIRTD[@]}" -d </dev/null >>"$d/init.log" 2>&1
		wait_libvirtd "$h"
		;;
	restart-watchdog)
		[[ $# -eq 1 ]] || die "usage: lab.sh restart-watchdog HOST"
		load_env
		lock
		stop_watchdog "$1"
		start_watchdog "$1"
		;;
	start-watchdog)
		[[ $# -eq 1 ]] || die "usage: lab.sh start-watchdog HOST"
		load_env
		start_watchdog "$1"
		;;
	stop-watchdog)
		[[ $# -ge 1 && $# -le 2 ]] || die "usage: lab.sh stop-watchdog HOST [SIGNAL]"
		load_env
		stop_watchdog "$1" "${2:-TERM}"
		;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

# "; exit" on the same line: bash reads no further, so a lab.sh rewritten while
# this one runs (an edit, a git checkout) is never half-read and run.
main "$@"; exit
