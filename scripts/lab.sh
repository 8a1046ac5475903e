#!/usr/bin/env bash
# lab.sh — a virtlease lab on one machine: one etcd, N "hosts", each a mount+UTS
# namespace with its own libvirtd, virtlogd, /etc/libvirt (the virtlease hook),
# /etc/virtlease, /run, /var/lib/libvirt, and its own TCP proxy to etcd.
# Run "scripts/lab.sh help" for the commands.
#
# Everything lives under $VL_LAB_ROOT (default /var/tmp/virtlease-lab); ports
# start at $VL_LAB_PORT (default 23790): etcd client P, peer P+1, qemu-nbd P+2,
# host i's proxy P+3+i; host i's libvirtd gives its guests VNC ports
# P+32+16i…P+39+16i and takes incoming migrations on P+40+16i…P+47+16i, so
# that neither two hosts nor two labs race for libvirt's default ranges (every
# lab host shares the machine's network). A lab of N hosts uses P…P+31+16N.
# Commands that change the lab hold flock "$ROOT.lock".
# Processes are only ever ended by recorded PID or by membership of a lab
# host's recorded mount+UTS namespaces; nothing is killed by name.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/lab.sh COMMAND [ARGS]

  start [N]                 start (or complete) a lab of N hosts (default 2): host-a, host-b, …
  stop [--purge]            end every lab process by PID / lab namespace; --purge also removes ROOT
  status                    which hosts and processes are alive
  env                       shell lines: eval "$(scripts/lab.sh env)"
  virsh HOST ARGS…          virsh against HOST's libvirtd
  exec HOST CMD…            run CMD inside HOST's mount+UTS namespace
  freeze HOST | thaw HOST   SIGSTOP / SIGCONT HOST's proxy to etcd (a partition that hangs)
  cut HOST | heal HOST [DELAY]
                            kill HOST's proxy (connections reset) / start it again, with
                            optional per-chunk latency (e.g. 50ms)
  restart-libvirtd HOST [--kill]
                            stop HOST's libvirtd (SIGTERM, or SIGKILL) and start it again
  restart-watchdog HOST     stop HOST's virtlease watchdog (SIGTERM) and start it again
  start-watchdog HOST | stop-watchdog HOST [SIGNAL]
  hosts                     the lab's host names, one a line

environment:
  VL_LAB_ROOT (/var/tmp/virtlease-lab)  VL_LAB_PORT (23790): a lab of N hosts uses
                         ports P…P+31+16N (etcd P, peer P+1, qemu-nbd P+2, host i's proxy
                         P+3+i, VNC P+32+16i…+7, incoming migrations P+40+16i…+7)
  VL_BIN                 use this virtlease binary instead of building ./cmd/virtlease
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
/run/* | /etc/* | /var/lib/libvirt* | /var/log/libvirt* | /var/cache/libvirt*)
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

# host_pids HOST: every process in HOST's recorded mount AND UTS namespaces.
host_pids() {
	local d mnt uts p self_mnt
	d=$(hdir "$1")
	[[ -s $d/mntns && -s $d/utsns ]] || return 0
	mnt=$(<"$d/mntns")
	uts=$(<"$d/utsns")
	self_mnt=$(readlink /proc/1/ns/mnt 2>/dev/null || true)
	if [[ $mnt == "$(readlink /proc/self/ns/mnt)" || $mnt == "$self_mnt" ]]; then
		log "$1: recorded namespace $mnt is the machine's own: not touching it"
		return 0
	fi
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$mnt" ]] || continue
		[[ $(readlink "$p/ns/uts" 2>/dev/null) == "$uts" ]] || continue
		echo "${p#/proc/}"
	done
}

# in_host_ns HOST PID: PID is one of HOST's processes. (No "host_pids | grep -q":
# under pipefail grep's early exit fails the pipeline with SIGPIPE.)
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

holder_pid() {
	local d pid
	d=$(hdir "$1")
	pid=$(pidof_file "$d/holder.pid")
	[[ -n $pid ]] && alive "$pid" && [[ -s $d/mntns ]] &&
		[[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$(<"$d/mntns")" ]] && echo "$pid"
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
	nsenter -t "$pid" -m -u -- "$@" 9>&-
}

# ---------------------------------------------------------------- build

build() {
	mkdir -p "$ROOT/bin"
	local t0=$SECONDS
	(
		cd "$REPO"
		export GOFLAGS=${GOFLAGS:--mod=mod}
		go build -o "$ROOT/bin/.etcd.new" ./scripts/etcd
		go build -o "$ROOT/bin/.labproxy.new" ./scripts/labproxy
		if [[ -n ${VL_BIN:-} ]]; then
			[[ -x $VL_BIN ]] || die "VL_BIN=$VL_BIN is not an executable file"
			cp "$VL_BIN" "$ROOT/bin/.virtlease.new"
		else
			CGO_ENABLED=0 go build -o "$ROOT/bin/.virtlease.new" ./cmd/virtlease ||
				die "building ./cmd/virtlease failed (set VL_BIN=/path/to/virtlease to use another binary)"
		fi
	) || exit 1
	# rename, never rewrite in place: running copies keep their file
	local b
	for b in etcd labproxy virtlease; do mv -f "$ROOT/bin/.$b.new" "$ROOT/bin/$b"; done
	log "built etcd, labproxy, virtlease into $ROOT/bin ($((SECONDS - t0)) s)"
}

# ---------------------------------------------------------------- etcd, nbd, proxies

start_etcd() {
	local pid
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
	local h=$1 p pid delay=${2:-}
	mkdir -p "$ROOT/proxy"
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

proxy_pid() {
	local pid
	pid=$(pidof_file "$ROOT/proxy/$1.pid")
	if [[ -z $pid ]] || ! ours "$pid"; then die "$1's proxy is not running"; fi
	echo "$pid"
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
	mkdir -p "$d"/{etc-libvirt/hooks,etc-libvirt/qemu/networks/autostart,etc-libvirt/nwfilter,etc-virtlease,run,lib,log,cache}
	if [[ -d /etc/libvirt/nwfilter ]]; then cp -a /etc/libvirt/nwfilter/. "$d/etc-libvirt/nwfilter/"; fi
	cat >"$d/etc-libvirt/libvirtd.conf" <<EOF
# lab host $h (scripts/lab.sh)
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
	cat >"$d/etc-libvirt/qemu.conf" <<EOF
# lab host $h (scripts/lab.sh): no private namespaces, relabelling or cgroups in a lab host
namespaces = [ ]
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
	cat >"$d/etc-virtlease/config.yaml" <<EOF
# lab host $h (scripts/lab.sh): etcd through this host's own proxy
host: $h
prefix: /virtlease
etcd:
  endpoints: [http://127.0.0.1:$(proxy_port "$h")]
  dial_timeout: 2s
session:
  ttl: ${VL_LAB_TTL:-10s}
  renew_interval: ${VL_LAB_RENEW:-1s}
fence:
  margin: ${VL_LAB_MARGIN:-3s}
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
# lab host $h: runs as 'unshare -m -u' (scripts/lab.sh); holds the namespaces.
set -eu
echo \$\$ >'$d/holder.pid'
readlink /proc/self/ns/mnt >'$d/mntns'
readlink /proc/self/ns/uts >'$d/utsns'
echo '$h' >/proc/sys/kernel/hostname
mount --make-rprivate /
mount --bind '$d/etc-libvirt' /etc/libvirt
mount --bind '$d/etc-virtlease' /etc/virtlease
mount --bind '$d/run' /run
mount --bind '$d/lib' /var/lib/libvirt
mount --bind '$d/log' /var/log/libvirt
mount --bind '$d/cache' /var/cache/libvirt
mkdir -p /run/libvirt /run/virtlease
virtlogd -d
${LIBVIRTD[*]} -d
echo "\$(date +%T) $h: virtlogd and libvirtd started"
exec sleep infinity
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
	local h d pids qemus=() others=() p nq no
	for h in "$@"; do
		mapfile -t pids < <(host_pids "$h")
		nq=${#qemus[@]} no=${#others[@]}
		for p in "${pids[@]}"; do
			[[ $p == "$$" ]] && continue
			if [[ $(cat "/proc/$p/comm" 2>/dev/null) == qemu-system-* ]]; then qemus+=("$p"); else others+=("$p"); fi
		done
		if ((${#qemus[@]} + ${#others[@]} > nq + no)); then
			log "$h: stopping $((${#qemus[@]} - nq)) guest(s) and $((${#others[@]} - no)) other process(es)"
		fi
	done
	kill_wait KILL 5 "${qemus[@]}"
	kill_wait TERM 5 "${others[@]}"
	for h in "$@"; do
		d=$(hdir "$h")
		rm -f "$d/holder.pid" "$d/watchdog.pid" "$d/run/libvirtd.pid" "$d/run/virtlogd.pid"
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
	mkdir -p /etc/virtlease # a mount point for the bind mount (stays empty on the machine)
	setsid unshare -m -u --propagation private -- /bin/sh "$d/init.sh" </dev/null >>"$d/init.log" 2>&1 9>&- &
	for ((i = 0; i < 100; i++)); do
		[[ -n $(holder_pid "$h") ]] && return 0
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

start_watchdog() {
	local h=$1 d holder pid
	d=$(hdir "$h")
	pid=$(pidof_file "$d/watchdog.pid")
	if [[ -n $pid ]] && ours "$pid"; then return 0; fi
	holder=$(need_holder "$h")
	spawn "$d/watchdog.pid" "$d/watchdog.log" \
		nsenter -t "$holder" -m -u -- env VIRTLEASE_CONFIG=/etc/virtlease/config.yaml "$ROOT/bin/virtlease" watchdog
	sleep 0.3
	pid=$(pidof_file "$d/watchdog.pid")
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
	mkdir -p "$ROOT"/{hosts,proxy}
	build
	printf 'PORT=%s\nNHOSTS=%s\n' "$PORT" "$n" >"$ROOT/lab.env"
	for h in $(all_hosts); do
		if (($(host_index "$h") >= n)); then stop_hosts "$h"; stop_pidfile "$ROOT/proxy/$h.pid"; fi
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
	log "lab up: $n host(s) in $ROOT, etcd $(etcd_url) ($((SECONDS - t0)) s)"
	cat <<EOF
lab: $n host(s) in $ROOT; etcd at $(etcd_url); domains vm1, vm1-copy (same qcow2 file), vm2 (nbd) on every host
  etcd:   ETCDCTL_API=3 etcdctl --endpoints $(etcd_url) get --prefix /virtlease
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
	# shellcheck disable=SC2046
	stop_hosts $(all_hosts)
	for h in "$ROOT"/proxy/*.pid; do [[ -f $h ]] && stop_pidfile "$h"; done
	stop_pidfile "$ROOT/nbd.pid"
	stop_pidfile "$ROOT/etcd/etcd.pid"
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
		echo "    libvirtd: $(state "$(pidof_file "$d/run/libvirtd.pid")")"
		echo "    virtlogd: $(state "$(pidof_file "$d/run/virtlogd.pid")")"
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
	echo "alias lab-etcdctl='ETCDCTL_API=3 etcdctl --endpoints $(etcd_url)'"
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
		exec nsenter -t "$pid" -m -u -- "$@"
		;;
	freeze | thaw | cut)
		[[ $# -eq 1 ]] || die "usage: lab.sh $cmd HOST"
		load_env
		local pid
		pid=$(proxy_pid "$1")
		case $cmd in
		freeze) kill -STOP "$pid" ;;
		thaw) kill -CONT "$pid" ;;
		cut)
			kill -KILL "$pid"
			rm -f "$ROOT/proxy/$1.pid"
			;;
		esac
		;;
	heal)
		[[ $# -ge 1 && $# -le 2 ]] || die "usage: lab.sh heal HOST [DELAY]"
		load_env
		lock
		host_index "$1" >/dev/null
		stop_pidfile "$ROOT/proxy/$1.pid"
		start_proxy "$1" "${2:-}"
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

main "$@"
