#!/usr/bin/env bash
# pkgtest.sh — the .deb on a real host: sudo flock /tmp/vl-lab.lock ./scripts/pkgtest.sh
#
# Builds two packages (scripts/package.sh, versions 1.0.0 and 1.0.1), boots
# this machine's own OS in a systemd-nspawn container (systemd as PID 1,
# libvirtd with its stock configuration, every write discarded at exit),
# starts an etcd outside on 127.0.0.1, and checks inside the container:
#   - a foreign /etc/libvirt/hooks/qemu is there first and is never touched;
#   - dpkg -i 1.0.0: files where the package puts them, the watchdog enabled
#     and running, libvirtd restarted so that it calls the hook: `virsh start`
#     of a tiny guest is claimed in etcd for this host, the foreign hook ran too;
#   - dpkg -i 1.0.0 again: still installed, running, the guest untouched;
#   - dpkg -i 1.0.1 (upgrade): the watchdog restarted (a new PID), the guest's
#     QEMU the same, still claimed by this host;
#   - dpkg --purge: nothing of the package left (files, units' links,
#     deb-systemd-helper state, /etc/virtlease), the foreign hook intact;
#   - dpkg -i with the example config: the watchdog not started, and the
#     hook refuses a start.
# Run it under the lab lock (it boots a container and uses libvirt).
#
# Exit status: 0 passed, 1 a check failed or a prerequisite is missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export GOFLAGS=${GOFLAGS:--mod=mod}
T0=$SECONDS

say() { printf 'pkgtest.sh: %s\n' "$*" >&2; }
fail() {
	printf 'pkgtest.sh: FAIL: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it boots a container)"
for c in systemd-nspawn nsenter dpkg-deb etcdctl go ss; do
	command -v "$c" >/dev/null || fail "$c is not installed (apt-get install systemd-container etcd-client; Go >= 1.26.4)"
done
[ -x /usr/sbin/libvirtd ] || fail "libvirtd is not installed (apt-get install libvirt-daemon-system)"
[ -x /usr/bin/qemu-system-x86_64 ] || fail "QEMU is not installed (apt-get install qemu-system-x86)"
for p in /etc/libvirt/hooks/qemu /etc/libvirt/hooks/qemu.d/50-virtlease /usr/sbin/virtlease /etc/virtlease/config.yaml; do
	# The container starts as a copy of this machine: it must not have the package already.
	[ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p exists on this machine; the test needs a machine without virtlease"
done

WORK=$(mktemp -d /var/tmp/vl-pkgtest.XXXXXX)
ROOTRO=$WORK/root
NSPAWN_PID=
ETCD_PID=
PID1=
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		# SIGTERM to systemd-nspawn: the container powers off.
		kill -TERM "$NSPAWN_PID" 2>/dev/null || true
		for ((i = 0; i < 600; i++)); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$NSPAWN_PID" 2>/dev/null; then
			say "the container did not power off in 60 s: killing it"
			[ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null
			kill -KILL "$NSPAWN_PID" 2>/dev/null || true
			wait "$NSPAWN_PID" 2>/dev/null || true
		fi
	fi
	if [ -n "$ETCD_PID" ]; then
		kill -TERM "$ETCD_PID" 2>/dev/null || true
		wait "$ETCD_PID" 2>/dev/null || true
	fi
	if mountpoint -q "$ROOTRO"; then
		umount "$ROOTRO" || umount -l "$ROOTRO" || true
	fi
	if [ "$rc" = 0 ]; then
		rm -rf "$WORK"
	else
		say "logs kept in $WORK (nspawn.log, etcd.log, journal.txt)"
		rm -rf "$WORK/root" "$WORK/etcd-data" "$WORK/etcd" "$WORK/debs"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ build

mkdir -p "$WORK/debs"
for v in 1.0.0 1.0.1; do
	"$REPO/scripts/package.sh" --version "$v" --out "$WORK/debs" >/dev/null 2>"$WORK/package-$v.log" ||
		fail "package.sh --version $v: $(cat "$WORK/package-$v.log")"
done
arch=$(dpkg --print-architecture)
DEB1=virtlease_1.0.0_$arch.deb
DEB2=virtlease_1.0.1_$arch.deb
(cd "$REPO" && go build -o "$WORK/etcd" ./scripts/etcd) || fail "go build ./scripts/etcd"

# ------------------------------------------------------------ etcd outside

port=
for ((p = 23400 + $$ % 500 * 2; p < 24500; p += 2)); do
	if ! ss -Hltn "sport = :$p or sport = :$((p + 1))" | grep -q .; then
		port=$p
		break
	fi
done
[ -n "$port" ] || fail "no free port pair for etcd"
ETCD=http://127.0.0.1:$port
"$WORK/etcd" --name pkgtest --data-dir "$WORK/etcd-data" \
	--listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
	--listen-peer-urls "http://127.0.0.1:$((port + 1))" \
	--initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
	--initial-cluster "pkgtest=http://127.0.0.1:$((port + 1))" \
	--initial-cluster-state new --log-level warn >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD" --dial-timeout 1s --command-timeout 5s "$@"; }
for ((i = 0; ; i++)); do
	etcdctl_ endpoint health >/dev/null 2>&1 && break
	[ $i -lt 300 ] || fail "etcd did not become healthy at $ETCD"
	kill -0 "$ETCD_PID" 2>/dev/null || fail "etcd exited: $(tail -5 "$WORK/etcd.log")"
	sleep 0.1
done

# ------------------------------------------------------------ the host

mkdir -p "$ROOTRO"
mount --bind / "$ROOTRO"
name=vl-pkg-$$
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -D "$ROOTRO" --volatile=overlay --register=no \
	--keep-unit --link-journal=no -M "$name" --uuid="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
	--console=passive --bind-ro="$WORK/debs:/vl-debs" -b >"$WORK/nspawn.log" 2>&1 </dev/null &
NSPAWN_PID=$!
for ((i = 0; ; i++)); do
	PID1=$(cat "/proc/$NSPAWN_PID/task/$NSPAWN_PID/children" 2>/dev/null | awk '{print $1}')
	[ -n "$PID1" ] && [ "$(cat "/proc/$PID1/comm" 2>/dev/null)" = systemd ] && break
	[ $i -lt 300 ] || fail "the container's systemd did not start: $(tail -5 "$WORK/nspawn.log")"
	kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited: $(tail -5 "$WORK/nspawn.log")"
	sleep 0.1
done
# inhost CMD…: run CMD inside the host, as root, with a plain environment.
inhost() { nsenter -t "$PID1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# Its bus comes up a moment after PID 1; then wait for the boot to end.
for ((i = 0; ; i++)); do
	state=$(inhost timeout 120 systemctl is-system-running --wait 2>&1) || true
	case $state in
	running | degraded) break ;;
	*"Failed to connect to bus"*) [ $i -lt 600 ] || fail "the host's systemd bus never came up" ;;
	*) fail "the host did not boot: $state" ;;
	esac
	sleep 0.1
done
say "host $name booted ($state) $((SECONDS - T0)) s after the start of the test"
# nspawn lays a made-up boot ID over the kernel's; hardened units see the real one.
inhost umount /proc/sys/kernel/random/boot_id 2>/dev/null || true
journal() { inhost journalctl --no-pager -b -u virtlease-watchdog.service -u libvirtd.service >"$WORK/journal.txt" 2>&1 || true; }

# check DESCRIPTION CMD…: CMD must succeed.
check() {
	local what=$1
	shift
	if ! "$@"; then
		journal
		fail "$what"
	fi
}

# This machine's image forbids service starts from maintainer scripts
# (policy-rc.d exits 101, as in a container build); a real host has none.
inhost rm -f /usr/sbin/policy-rc.d

# A foreign hook, as another program would have put it: libvirt runs it and then qemu.d.
inhost mkdir -p /etc/libvirt/hooks
inhost sh -c 'printf "#!/bin/sh\necho \"\$@\" >>/var/log/foreign-hook.log\n" >/etc/libvirt/hooks/qemu && chmod 755 /etc/libvirt/hooks/qemu'
foreign=$(inhost sha256sum /etc/libvirt/hooks/qemu)

# Configuration management writes the config before the package comes.
host=pkg-host
inhost mkdir -p /etc/virtlease
inhost sh -c "cat >/etc/virtlease/config.yaml" <<EOF
host: $host
etcd:
  endpoints: [$ETCD]
EOF

# ------------------------------------------------------------ install

dpkg_() { inhost env DEBIAN_FRONTEND=noninteractive dpkg --force-confold "$@"; }
check "dpkg -i $DEB1" dpkg_ -i "/vl-debs/$DEB1"
for f in /usr/sbin/virtlease /lib/systemd/system/virtlease-watchdog.service /lib/systemd/system/virtlease-shutdown.service \
	/usr/share/man/man8/virtlease.8.gz /usr/share/bash-completion/completions/virtlease /etc/virtlease/config.yaml; do
	check "$f is not installed" inhost test -f "$f"
done
check "qemu.d/50-virtlease is not a link to /usr/sbin/virtlease" \
	test "$(inhost readlink /etc/libvirt/hooks/qemu.d/50-virtlease)" = /usr/sbin/virtlease
check "the foreign hooks/qemu changed" test "$(inhost sha256sum /etc/libvirt/hooks/qemu)" = "$foreign"
check "the pre-written config was replaced" inhost grep -q "host: $host" /etc/virtlease/config.yaml
check "virtlease-watchdog.service is not enabled" inhost systemctl -q is-enabled virtlease-watchdog.service
check "virtlease-shutdown.service is not enabled" inhost systemctl -q is-enabled virtlease-shutdown.service
check "virtlease-watchdog.service is not active" inhost systemctl -q is-active virtlease-watchdog.service
check "virtlease-shutdown.service is not active" inhost systemctl -q is-active virtlease-shutdown.service
check "man virtlease" inhost sh -c 'man -P cat virtlease 2>/dev/null | grep -q "virtlease watchdog\|^WATCHDOG\|watchdog"'
say "dpkg -i $DEB1: files in place, units enabled and running"

# A tiny guest with a local qcow2 disk.
uuid=5d0e1a5e-0000-4000-8000-0000000000f1
inhost qemu-img create -q -f qcow2 /var/lib/libvirt/images/vl-pkg.qcow2 16M
sed -e "s|@NAME@|vl-pkg|" -e "s|@UUID@|$uuid|" -e "s|@DISK@|/var/lib/libvirt/images/vl-pkg.qcow2|" \
	"$REPO/testdata/lab/domain-file.xml.in" | inhost sh -c 'cat >/tmp/vl-pkg.xml'
check "virsh define" inhost virsh -q -c qemu:///system define /tmp/vl-pkg.xml >/dev/null
check "virsh start vl-pkg with the packaged hook" inhost virsh -q -c qemu:///system start vl-pkg >/dev/null
claims() { etcdctl_ get --prefix /virtlease/ 2>/dev/null | grep -A1 "$uuid" | grep -c "\"$host\"" || true; }
[ "$(claims)" -ge 1 ] || { journal; fail "no claim in etcd for $uuid held by $host after virsh start: $(etcdctl_ get --prefix /virtlease/)"; }
# The claim alone does not show the hook ran (the watchdog's reconcile claims
# running guests too); libvirtd running the foreign hook shows it re-read the
# hooks, qemu.d included, after postinst restarted it.
check "the foreign hook did not run: libvirtd did not re-read its hooks" inhost grep -q "vl-pkg prepare begin" /var/log/foreign-hook.log
status=$(inhost virtlease status vl-pkg 2>&1) || true
case $status in *"$host"*) ;; *) fail "virtlease status vl-pkg does not name $host: $status" ;; esac
qemu=$(inhost cat /run/libvirt/qemu/vl-pkg.pid)
say "virsh start vl-pkg: claimed in etcd by $host, the foreign hook ran too (QEMU $qemu)"

# ------------------------------------------------------------ again, upgrade

wd() { inhost systemctl show -P MainPID virtlease-watchdog.service; }
check "dpkg -i $DEB1 (again)" dpkg_ -i "/vl-debs/$DEB1"
check "virtlease-watchdog.service is not active after the second dpkg -i" inhost systemctl -q is-active virtlease-watchdog.service
check "the guest's QEMU changed after the second dpkg -i" test "$(inhost cat /run/libvirt/qemu/vl-pkg.pid)" = "$qemu"
say "dpkg -i $DEB1 again: fine"

before=$(wd)
check "dpkg -i $DEB2 (upgrade)" dpkg_ -i "/vl-debs/$DEB2"
check "not 1.0.1 after the upgrade" test "$(inhost dpkg-query -W -f '${Version}' virtlease)" = 1.0.1
check "virtlease-watchdog.service is not active after the upgrade" inhost systemctl -q is-active virtlease-watchdog.service
after=$(wd)
check "the watchdog was not restarted on upgrade (MainPID $before)" test "$after" != "$before" -a "$after" != 0
check "the guest's QEMU changed on upgrade" test "$(inhost cat /run/libvirt/qemu/vl-pkg.pid)" = "$qemu"
check "the guest is not running after the upgrade" test "$(inhost virsh -q -c qemu:///system domstate vl-pkg)" = running
[ "$(claims)" -ge 1 ] || fail "the claim of $uuid is gone after the upgrade"
check "virtlease version is not 1.0.1" inhost sh -c 'virtlease version | grep -q 1.0.1'
say "upgrade to 1.0.1: the watchdog restarted (MainPID $before -> $after), the guest kept running and claimed"

# ------------------------------------------------------------ purge

check "virsh destroy" inhost virsh -q -c qemu:///system destroy vl-pkg >/dev/null
check "dpkg --purge" dpkg_ --purge virtlease
left=$(inhost sh -c 'ls -d /usr/sbin/virtlease /etc/libvirt/hooks/qemu.d/50-virtlease /lib/systemd/system/virtlease-* \
	/usr/share/man/man8/virtlease.8.gz /usr/share/bash-completion/completions/virtlease /usr/share/virtlease /etc/virtlease /run/virtlease 2>/dev/null;
	find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
		-name "*virtlease*" 2>/dev/null' || true)
[ -z "$left" ] || fail "dpkg --purge left: $left"
check "the package is still known to dpkg after --purge" test -z "$(inhost dpkg-query -W -f '${Status}' virtlease 2>/dev/null)"
check "virtlease-watchdog.service still runs after --purge" sh -c "! nsenter -t $PID1 -a systemctl -q is-active virtlease-watchdog.service"
check "the foreign hooks/qemu changed on purge" test "$(inhost sha256sum /etc/libvirt/hooks/qemu)" = "$foreign"
say "dpkg --purge: nothing left, the foreign hook intact"

# A first install with the example config: the watchdog is enabled but not
# started (it names no real etcd), and the hook refuses every start.
out=$(dpkg_ -i "/vl-debs/$DEB2" 2>&1) || fail "dpkg -i $DEB2 with the example config: $out"
case $out in *"not starting virtlease-watchdog.service"*) ;; *) fail "no word that the watchdog was not started: $out" ;; esac
check "virtlease-watchdog.service is not enabled (example config)" inhost systemctl -q is-enabled virtlease-watchdog.service
# inactive, not failed nor activating: nothing (the shutdown unit's Wants=) started it.
st=$(inhost systemctl show -P ActiveState virtlease-watchdog.service)
check "virtlease-watchdog.service is $st with the example config; want inactive" test "$st" = inactive
if out=$(inhost virsh -q -c qemu:///system start vl-pkg 2>&1); then
	fail "virsh start vl-pkg succeeded with no watchdog running: $out"
fi
case $out in *virtlease*) ;; *) fail "virsh start vl-pkg failed, but not by the hook: $out" ;; esac
check "dpkg --purge (example config)" dpkg_ --purge virtlease
say "example config: the watchdog enabled, not started; the hook refused the start"
say "PASS in $((SECONDS - T0)) s"
