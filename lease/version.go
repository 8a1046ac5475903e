package lease

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// EndpointVersion is the etcd server version one endpoint reported.
type EndpointVersion struct {
	Endpoint string
	Version  string // "" when the endpoint did not answer
	Err      error
}

// Versions asks every configured endpoint for its server version (etcd's
// Status call), one at a time, each under ctx. Only the configured
// endpoints are asked: a host talks to etcd through those alone.
func (s *Store) Versions(ctx context.Context) []EndpointVersion {
	var out []EndpointVersion
	for _, ep := range s.cli.Endpoints() {
		resp, err := s.cli.Status(ctx, ep)
		if err != nil {
			out = append(out, EndpointVersion{Endpoint: ep, Err: s.wrap(err, "reading the status of etcd at "+ep)})
			continue
		}
		out = append(out, EndpointVersion{Endpoint: ep, Version: resp.Version})
	}
	return out
}

// leaseSafeVersions is, per etcd release line, the first release that has
// both server fixes the safety argument leans on (from etcd's
// CHANGELOG-3.4, -3.5 and -3.6):
//   - a deposed leader's lease revokes are ignored (etcd PR 16822: in
//     3.6.0; backported as PR 17425 to 3.5.13 and PR 17465 to 3.4.31);
//     without it a leader stuck in a slow disk write revokes live leases,
//     deleting the keys of hosts that renewed in time;
//   - a lease is re-checked during a renewal (PR 20590: backported as
//     PR 20615 to 3.6.5, PR 20616 to 3.5.23, PR 20813 to 3.4.38); without
//     it a renewal racing a revoke is acknowledged for a lease that is
//     gone, so the watchdog extends a deadline etcd no longer honours.
//
// Lines after 3.6 have both.
var leaseSafeVersions = map[int]int{4: 38, 5: 23, 6: 5}

// VersionProblem says what is wrong with etcd server version v for the
// safety argument, or "" when nothing is (or v cannot be read: the caller
// reports that).
func VersionProblem(v string) string {
	major, minor, patch, ok := parseVersion(v)
	switch {
	case !ok:
		return ""
	case major < 3 || (major == 3 && minor < 4):
		return fmt.Sprintf("etcd %s is older than 3.4: it lacks the lease fixes of etcd PRs 16822 and 20590 (upgrade to 3.4.38, 3.5.23, 3.6.5 or later)", v)
	case major > 3:
		return ""
	}
	need, known := leaseSafeVersions[minor]
	if !known || patch >= need {
		return ""
	}
	return fmt.Sprintf("etcd %s lacks a lease fix the fence relies on (etcd PR 16822: a deposed leader's revokes are ignored; PR 20590: a lease is re-checked during renewal): upgrade to 3.%d.%d or later", v, minor, need)
}

func parseVersion(v string) (major, minor, patch int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "-") // 3.6.0-rc.1 → 3.6.0
	f := strings.Split(v, ".")
	if len(f) != 3 {
		return 0, 0, 0, false
	}
	n := make([]int, 3)
	for i, s := range f {
		x, err := strconv.Atoi(s)
		if err != nil {
			return 0, 0, 0, false
		}
		n[i] = x
	}
	return n[0], n[1], n[2], true
}
