package lease

import (
	"context"
	"sync/atomic"
	"time"
)

// Renewer renews session leases through each etcd endpoint in turn, on a
// connection of its own per endpoint.
//
// Why not the shared client: its gRPC round robin picks a member per call
// across all of the watchdog's calls, so with a fixed pattern of other
// calls between renewals (HA reads, reconcile reads) every renewal can land
// on the same member. When that member hangs (a SIGSTOPped or paused etcd
// leader: its connection stays open), every renewal hangs with it until the
// host fences although the other members answer — a false fence the fault
// campaign caught (seed 487995446). Here renewal k goes to endpoint k mod n,
// so of any n renewals in flight each member gets one.
type Renewer struct {
	stores []*Store
	next   atomic.Uint64
	close  func()
}

// NewRenewer dials one client per endpoint of c. An endpoint that cannot
// be dialled now (with a user name, dialling logs in) falls back to
// shared, the store every other call uses, so the watchdog starts with any
// member reachable.
func NewRenewer(c EtcdConfig, shared *Store) (*Renewer, []error) {
	r := &Renewer{}
	var closers []func()
	var errs []error
	for _, ep := range c.Endpoints {
		one := c
		one.Endpoints = []string{ep}
		cli, err := Dial(one)
		if err != nil {
			errs = append(errs, err)
			r.stores = append(r.stores, shared)
			continue
		}
		closers = append(closers, func() { cli.Close() })
		r.stores = append(r.stores, NewStore(cli, ""))
	}
	if len(r.stores) == 0 {
		r.stores = []*Store{shared}
	}
	r.close = func() {
		for _, f := range closers {
			f()
		}
	}
	return r, errs
}

// Renew renews id once through the next endpoint; see Store.Renew.
func (r *Renewer) Renew(ctx context.Context, id ID) (time.Duration, error) {
	s := r.stores[(r.next.Add(1)-1)%uint64(len(r.stores))]
	return s.Renew(ctx, id)
}

// Close closes the per-endpoint connections.
func (r *Renewer) Close() { r.close() }

// WithRenewer is a Store whose session renewals go through a Renewer; the
// watchdog uses it as its sessions.
type WithRenewer struct {
	*Store
	Renewer *Renewer
}

// Renew renews id through the Renewer.
func (s WithRenewer) Renew(ctx context.Context, id ID) (time.Duration, error) {
	return s.Renewer.Renew(ctx, id)
}
