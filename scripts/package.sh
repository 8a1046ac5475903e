#!/usr/bin/env bash
# package.sh — build the Debian package: ./scripts/package.sh
#   → dist/virtlease_VERSION_ARCH.deb
#
# The binary is built without cgo; the man page and bash completion come from
# the binary itself; nfpm (a Go tool dependency in go.mod: nothing is
# downloaded beyond the module cache) writes the .deb from
# scripts/package/nfpm.yaml and the maintainer scripts beside it.
#
# Options:
#   --version V   the package version (default: git describe, without a
#                 leading v; 0.0.0~git<hash> if there is no tag)
#   --arch A      GOARCH to build for (default: go env GOARCH)
#   --out DIR     where the .deb goes (default: dist/)
#   -h, --help    this text
#
# Needs Go >= 1.26.4 (go.mod). Exit status: 0 built, 2 usage or a failed step.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=
GOARCH_WANT=
OUT=$REPO/dist

die() {
	printf 'package.sh: %s\n' "$*" >&2
	exit 2
}
usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--version) [ $# -ge 2 ] || die "--version needs a value"; VERSION=$2; shift ;;
	--version=*) VERSION=${1#*=} ;;
	--arch) [ $# -ge 2 ] || die "--arch needs a value"; GOARCH_WANT=$2; shift ;;
	--arch=*) GOARCH_WANT=${1#*=} ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift ;;
	--out=*) OUT=${1#*=} ;;
	-h | --help) usage 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done

command -v go >/dev/null || die "go is not installed (Go >= 1.26.4 builds virtlease)"
cd "$REPO"
goarch=${GOARCH_WANT:-$(go env GOARCH)}
# Debian's names for Go's architectures.
case $goarch in
amd64 | arm64 | ppc64le | s390x | riscv64 | mips64le) deb_arch=$goarch ;;
386) deb_arch=i386 ;;
arm) deb_arch=armhf ;;
ppc64) deb_arch=ppc64 ;;
*) die "no Debian architecture known for GOARCH=$goarch" ;;
esac

# A Debian version must start with a digit: v1.2.3-4-gabc → 1.2.3+4.gabc.
if [ -z "$VERSION" ]; then
	if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
		VERSION=$(printf '%s' "${d#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/')
	else
		VERSION=0.0.0~git$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	fi
fi
case $VERSION in
[0-9]*) ;;
*) die "version $VERSION does not start with a digit (Debian requires it)" ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
echo "package.sh: building virtlease $VERSION for $goarch" >&2
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -ldflags "-X main.version=$VERSION" \
	-o "$stage/virtlease" ./cmd/virtlease || die "go build failed"

# The man page and completion come from a binary that runs here.
if [ "$goarch" = "$(go env GOHOSTARCH)" ]; then
	gen=$stage/virtlease
else
	CGO_ENABLED=0 go build -o "$stage/virtlease-host" ./cmd/virtlease || die "go build (host) failed"
	gen=$stage/virtlease-host
fi
"$gen" man >"$stage/virtlease.8" || die "virtlease man failed"
gzip -9n "$stage/virtlease.8"
"$gen" completion bash >"$stage/completion.bash" || die "virtlease completion bash failed"
cp scripts/systemd/virtlease-watchdog.service scripts/systemd/virtlease-shutdown.service "$stage/"
cp scripts/config.example.yaml "$stage/config.yaml"

mkdir -p "$OUT"
deb=$OUT/virtlease_${VERSION}_${deb_arch}.deb
rm -f "$deb"
# nfpm expands variables in a few fields only: fill them all in here.
sed -e "s|\${STAGE}|$stage|g" -e "s|\${SCRIPTS}|$REPO/scripts/package|g" \
	-e "s|\${VERSION}|$VERSION|g" -e "s|\${DEB_ARCH}|$deb_arch|g" \
	scripts/package/nfpm.yaml >"$stage/nfpm.yaml"
go tool nfpm pkg --packager deb --config "$stage/nfpm.yaml" --target "$deb" >&2 ||
	die "nfpm failed"
echo "$deb"
