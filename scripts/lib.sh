# lib.sh — shared by scripts/test.sh, scripts/demo.sh and scripts/bench.sh (sourced, not run).
#
# Defines APT_PACKAGES, GO_MIN, install_packages, check_go and host_pid. The caller sets
# CI ("true" makes a missing prerequisite fatal) and may define die; PATH gets
# /usr/local/go/bin and the sbin directories first.

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
GO_MIN=1.26.4 # go.mod's go line (nfpm's dependencies need 1.26.4)
# libvirt 9.0, QEMU 7.2 and etcdctl 3.4 on Debian 12; systemd for systemd-analyze
# (the unit tests verify the units; it need not be running); spin for the Promela
# models; gcc and libc6-dev for go test -race; systemd-container for scripts/pkgtest.sh.
APT_PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils etcd-client spin gcc libc6-dev systemd systemd-container)

if ! declare -F die >/dev/null; then
	die() {
		printf '%s: %s\n' "$(basename "$0")" "$*" >&2
		exit 1
	}
fi

# install_packages: apt-get install whatever of APT_PACKAGES is missing. Not
# root: fatal under CI=true, else a note (what needs the packages skips).
install_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		echo "apt packages present"
		return 0
	fi
	if [[ $(id -u) != 0 ]]; then
		[[ ${CI:-} == true ]] && die "missing packages ${missing[*]} and not root: run it with sudo"
		echo "missing packages ${missing[*]}; not root, not installing them"
		return 0
	fi
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -q
	apt-get -o DPkg::Lock::Timeout=600 install -y -q "${APT_PACKAGES[@]}"
}

# check_go: go is on PATH and at least GO_MIN.
check_go() {
	command -v go >/dev/null || die "go not found: install Go >= $GO_MIN in /usr/local/go"
	local v
	v=$(go env GOVERSION)
	v=${v#go}
	if ! printf '%s\n%s\n' "$GO_MIN" "$v" | sort -V -C; then
		die "go $v is too old: virtlease needs go >= $GO_MIN (/usr/local/go/bin is first on PATH)"
	fi
	echo "go $v"
}

# host_pid DIR NSPID: this machine's PID of a lab host's process NSPID (DIR is
# the host's directory). libvirt's pid files inside a host hold numbers of the
# host's own PID namespace.
host_pid() {
	local ns p
	ns=$(cat "$1/pidns" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/ns/pid" 2>/dev/null) == "$ns" ]] || continue
		if [[ $(awk '$1 == "NSpid:" {print $NF}' "$p/status" 2>/dev/null) == "$2" ]]; then
			echo "${p#/proc/}"
			return 0
		fi
	done
	return 0
}
