#!/usr/bin/env bash
# install.sh — install virtlease on one host: sudo ./scripts/install.sh
#
#   /usr/sbin/virtlease                                 the binary (built with CGO_ENABLED=0
#                                                       unless --binary names one)
#   /etc/libvirt/hooks/qemu -> /usr/sbin/virtlease      libvirt's hook (or, with --qemu-d,
#                                                       /etc/libvirt/hooks/qemu.d/50-virtlease)
#   /etc/virtlease/config.yaml                          an example config, never overwritten
#   /etc/systemd/system/virtlease-watchdog.service      the watchdog unit (and every other
#                                                       unit in scripts/systemd/)
#   /usr/share/bash-completion/completions/virtlease    bash completion
#
# Then, where systemd runs: systemctl daemon-reload and enable the unit (it is
# not started: edit the config first). Running it again is harmless: the
# binary and the unit are replaced, the config is kept.
#
# Options:
#   --binary FILE   install FILE instead of building from this checkout
#   --qemu-d        install the hook as /etc/libvirt/hooks/qemu.d/50-virtlease
#                   (libvirt >= 6.5 runs every file there, after hooks/qemu):
#                   use it when another program already owns hooks/qemu
#   --root DIR      install under DIR instead of / (a scratch root for tests or
#                   image builds); systemd is then left alone
#   --uninstall     remove what install put there; the config stays
#   --purge         with --uninstall: remove /etc/virtlease too
#   -h, --help      this text
#
# Exit status: 0 done, 1 refused (a foreign hook in the way), 2 usage or a
# failed step.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_PATH=/usr/sbin/virtlease
# Where install.sh put the binary before: libvirtd's AppArmor profile (Debian,
# Ubuntu) does not let libvirtd run anything under /usr/local, so it moved.
OLD_BIN_PATH=/usr/local/sbin/virtlease
HOOK=/etc/libvirt/hooks/qemu
HOOK_D=/etc/libvirt/hooks/qemu.d/50-virtlease
CONFIG=/etc/virtlease/config.yaml
UNIT_NAME=virtlease-watchdog.service
UNIT_DIR=/etc/systemd/system
# Every unit this checkout ships, by name: installed, enabled, removed together.
UNITS=()
for u in "$REPO"/scripts/systemd/*.service; do
	[ -e "$u" ] && UNITS+=("${u##*/}")
done
COMPLETION=/usr/share/bash-completion/completions/virtlease

ROOT=/
BINARY=
QEMU_D=false
UNINSTALL=false
PURGE=false

say() { printf 'install.sh: %s\n' "$*"; }
die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 2
}
refuse() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary)
		[ $# -ge 2 ] || die "--binary needs a file"
		BINARY=$2
		shift
		;;
	--binary=*) BINARY=${1#*=} ;;
	--root)
		[ $# -ge 2 ] || die "--root needs a directory"
		ROOT=$2
		shift
		;;
	--root=*) ROOT=${1#*=} ;;
	--qemu-d) QEMU_D=true ;;
	--uninstall) UNINSTALL=true ;;
	--purge) PURGE=true ;;
	-h | --help) usage 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done

if $PURGE && ! $UNINSTALL; then
	die "--purge only goes with --uninstall"
fi
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
# R is the prefix of every path written; paths inside files and links are the
# ones the target machine sees.
R=${ROOT%/}
if [ "$ROOT" = / ] && [ "$(id -u)" != 0 ]; then
	die "run as root (sudo $0), or give --root DIR"
fi

# ours reports whether the hook at $1 (a path under $R) is virtlease: a link
# to our binary (any path ending in /virtlease counts, so re-pointing an
# older install works).
ours() {
	[ -L "$1" ] || return 1
	local target
	target=$(readlink "$1")
	[ "$target" = "$BIN_PATH" ] || [ "${target##*/}" = virtlease ]
}

# link makes $1 (under $R) a symlink to the binary, atomically.
link() {
	mkdir -p "$(dirname "$1")"
	ln -sfn "$BIN_PATH" "$1.virtlease-new"
	mv -fT "$1.virtlease-new" "$1"
}

# systemd_here is true when we install into this machine and systemd runs it.
systemd_here() {
	[ "$ROOT" = / ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

describe() {
	if [ -L "$1" ]; then
		printf 'a link to %s' "$(readlink "$1")"
	elif [ -f "$1" ]; then
		printf 'a file (%s)' "$(head -c 200 "$1" | head -n 1 | tr -cd '[:print:]')"
	else
		printf 'not a regular file'
	fi
}

uninstall() {
	if systemd_here; then
		systemctl disable --now "${UNITS[@]}" 2>/dev/null || true
	fi
	local f
	for f in "$HOOK" "$HOOK_D"; do
		if ours "$R$f"; then
			rm -f "$R$f"
			say "removed $f"
		elif [ -e "$R$f" ] || [ -L "$R$f" ]; then
			say "left $f: it is not virtlease's ($(describe "$R$f"))"
		fi
	done
	for f in "${UNITS[@]/#/$UNIT_DIR/}" "$BIN_PATH" "$OLD_BIN_PATH" "$COMPLETION"; do
		if [ -e "$R$f" ] || [ -L "$R$f" ]; then
			rm -f "$R$f"
			say "removed $f"
		fi
	done
	if systemd_here; then
		systemctl daemon-reload
	fi
	if $PURGE; then
		rm -rf "$R/etc/virtlease"
		say "removed /etc/virtlease (--purge)"
	elif [ -e "$R$CONFIG" ]; then
		say "kept $CONFIG (--purge removes it)"
	fi
	say "restart libvirtd so that it forgets the hook: systemctl restart libvirtd"
}

if $UNINSTALL; then
	uninstall
	exit 0
fi

# Check the hook first, before anything is written: libvirt runs only one
# hooks/qemu, and replacing someone else's would silently drop what it does.
if $QEMU_D; then
	want=$HOOK_D
else
	want=$HOOK
fi
if { [ -e "$R$want" ] || [ -L "$R$want" ]; } && ! ours "$R$want"; then
	if [ "$want" = "$HOOK_D" ]; then
		refuse "$want already exists and is not virtlease: $(describe "$R$want"); move it away first"
	fi
	refuse "$HOOK already exists and is not virtlease: $(describe "$R$HOOK"). libvirt runs a single qemu hook, so it is left alone and nothing was installed. Either (a) with libvirt >= 6.5 (libvirtd --version), run again with --qemu-d: virtlease goes in $HOOK_D and libvirt runs it after $HOOK; or (b) chain it yourself: make $HOOK call '$BIN_PATH hook qemu \"\$@\"' with the same domain XML on stdin and exit with its status when that is not 0 (for example: xml=\$(cat); printf '%s' \"\$xml\" | $BIN_PATH hook qemu \"\$@\" || exit \$?; then the existing logic with \"\$xml\")."
fi

# The binary: given, or built from this checkout without cgo (one static
# binary, as libvirt runs it with an empty environment).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$BINARY" ]; then
	command -v go >/dev/null || die "go is not installed: install Go, or give --binary FILE"
	ver=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo dev)
	say "building virtlease $ver from $REPO"
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$ver" -o "$tmp/virtlease" ./cmd/virtlease) ||
		die "go build failed"
	BINARY=$tmp/virtlease
fi
if ! [ -f "$BINARY" ] || ! [ -x "$BINARY" ]; then
	die "--binary $BINARY is not an executable file"
fi

install -D -m 0755 "$BINARY" "$R$BIN_PATH.virtlease-new"
mv -f "$R$BIN_PATH.virtlease-new" "$R$BIN_PATH"
say "installed $BIN_PATH"
if [ -e "$R$OLD_BIN_PATH" ]; then
	rm -f "$R$OLD_BIN_PATH"
	say "removed $OLD_BIN_PATH (an older install's; the binary is now $BIN_PATH)"
fi

link "$R$want"
say "linked $want -> $BIN_PATH"
# One hook is enough: the other place, if ours, would run every call twice.
for other in "$HOOK" "$HOOK_D"; do
	if [ "$other" != "$want" ] && ours "$R$other"; then
		rm -f "$R$other"
		say "removed $other (the hook is now $want)"
	fi
done

if [ -e "$R$CONFIG" ]; then
	say "kept $CONFIG"
else
	install -d -m 0755 "$R/etc/virtlease"
	install -m 0644 "$REPO/scripts/config.example.yaml" "$R$CONFIG.virtlease-new"
	mv -f "$R$CONFIG.virtlease-new" "$R$CONFIG"
	say "wrote an example $CONFIG: set etcd.endpoints (and TLS, user) before starting the watchdog"
fi

for u in "${UNITS[@]}"; do
	install -D -m 0644 "$REPO/scripts/systemd/$u" "$R$UNIT_DIR/$u"
	say "installed $UNIT_DIR/$u"
done

# Completion comes from the binary itself; skip it if it cannot run here.
if "$R$BIN_PATH" completion bash >"$tmp/completion" 2>/dev/null; then
	install -D -m 0644 "$tmp/completion" "$R$COMPLETION"
	say "installed $COMPLETION"
fi

if systemd_here; then
	systemctl daemon-reload
	systemctl enable "${UNITS[@]}"
	# virtlease-shutdown.service does its work when it stops: one that was
	# never started does nothing at the next shutdown.
	say "enabled ${UNITS[*]}; next: edit $CONFIG, then systemctl start ${UNITS[*]} && systemctl restart libvirtd"
elif [ "$ROOT" != / ]; then
	say "installed under $ROOT: systemd was not touched (there: systemctl daemon-reload && systemctl enable --now $UNIT_NAME)"
else
	say "systemd is not running here (no /run/systemd/system), so the unit was not enabled; where it runs: systemctl daemon-reload && systemctl enable --now $UNIT_NAME"
fi
say "libvirtd reads its hooks when it starts: restart it (systemctl restart libvirtd) after the watchdog runs"
