#!/bin/sh
# etcdctl-hook.sh — the naive alternative to virtlease that scripts/bench.sh
# measures: a libvirt qemu hook an operator might write with etcdctl.
#
#   prepare begin:         one `etcdctl txn`: if PREFIX/domains/UUID does not exist
#                          (create revision 0), put it on the host's lease; else refuse
#   stopped/release end:   one `etcdctl txn`: delete the key if it still names this host
#
# The host's lease is granted once and kept alive by `etcdctl lease keep-alive`
# (the bench runs it); its ID and the endpoints are in naive-hook.env beside
# this script, because libvirt clears a hook's environment. It claims the
# domain key only (no disks, no session check, no deadline): that is the
# point of comparison, not a recommendation.
set -eu
# shellcheck disable=SC1091 # written by bench.sh beside the hook
. "$(dirname "$0")/naive-hook.env" # ENDPOINTS, LEASE, HOST, PREFIX
export ETCDCTL_API=3
name=$1 op=$2 sub=$3
case "$op/$sub" in
prepare/begin | stopped/end | release/end) ;;
*) exit 0 ;;
esac
uuid=$(sed -n 's:.*<uuid>\(.*\)</uuid>.*:\1:p' | head -n 1)
[ -n "$uuid" ] || {
	echo "naive-hook: no <uuid> in the domain XML" >&2
	exit 1
}
key=$PREFIX/domains/$uuid
if [ "$op" = prepare ]; then
	out=$(printf 'create("%s") = "0"\n\nput --lease=%s %s %s\n\nget --print-value-only %s\n\n' \
		"$key" "$LEASE" "$key" "$HOST" "$key" |
		etcdctl --endpoints "$ENDPOINTS" --dial-timeout 2s --command-timeout 5s txn) || {
		echo "naive-hook: etcd did not answer: refusing to start $name" >&2
		exit 1
	}
	case $out in
	SUCCESS*) exit 0 ;;
	esac
	echo "naive-hook: $name is running on host $(printf '%s\n' "$out" | tail -n 1)" >&2
	exit 1
fi
printf 'value("%s") = "%s"\n\ndel %s\n\n\n' "$key" "$HOST" "$key" |
	etcdctl --endpoints "$ENDPOINTS" --dial-timeout 2s --command-timeout 5s txn >/dev/null || true
exit 0
