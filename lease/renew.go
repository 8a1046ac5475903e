package lease

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// Renewer renews session leases through the etcd endpoints in turn, on a
// connection of its own per endpoint, avoiding an endpoint that is not
// answering.
//
// Why not the shared client: its gRPC round robin picks a member per call
// across all of the watchdog's calls, so with a fixed pattern of other
// calls between renewals (HA reads, reconcile reads) every renewal can land
// on the same member. When that member hangs (a SIGSTOPped or paused etcd
// leader: its connection stays open), every renewal hangs with it until the
// host fences although the other members answer — a false fence the fault
// campaign caught (seed 487995446).
//
// Which endpoint: the next in turn among those with no renewal in flight,
// no failure in the last renewalCooldown and a connection that is not
// failing; failing that, the next with no renewal in flight; failing that,
// the next. So a hung member (its request still in flight, or timed out)
// and a dead one (connection refused, reconnecting) are passed over while
// another member answers, and every member is tried again once its
// cooldown is over.
type Renewer struct {
	mu    sync.Mutex
	eps   []*renewEndpoint
	next  int
	close func()
	now   func() time.Time
}

type renewEndpoint struct {
	store    *Store
	conn     func() connectivity.State // nil: unknown (the shared client)
	inflight int
	failedAt time.Time
}

// renewalCooldown is how long an endpoint whose renewal failed is passed
// over while another one is fit.
const renewalCooldown = 5 * time.Second

// NewRenewer dials one client per endpoint of c. An endpoint that cannot
// be dialled now (with a user name, dialling logs in) falls back to
// shared, the store every other call uses, so the watchdog starts with any
// member reachable.
func NewRenewer(c EtcdConfig, shared *Store) (*Renewer, []error) {
	r := &Renewer{now: time.Now}
	var clis []*clientv3.Client
	var errs []error
	for _, ep := range c.Endpoints {
		one := c
		one.Endpoints = []string{ep}
		cli, err := Dial(one)
		if err != nil {
			errs = append(errs, err)
			r.eps = append(r.eps, &renewEndpoint{store: shared})
			continue
		}
		clis = append(clis, cli)
		r.eps = append(r.eps, &renewEndpoint{store: NewStore(cli, ""), conn: func() connectivity.State {
			if cc := cli.ActiveConnection(); cc != nil {
				return cc.GetState()
			}
			return connectivity.Idle
		}})
	}
	if len(r.eps) == 0 {
		r.eps = []*renewEndpoint{{store: shared}}
	}
	r.close = func() {
		for _, cli := range clis {
			cli.Close()
		}
	}
	return r, errs
}

// pick chooses the endpoint for the next renewal and marks it in flight.
func (r *Renewer) pick() *renewEndpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	fit := func(e *renewEndpoint) bool {
		if e.inflight > 0 || now.Sub(e.failedAt) < renewalCooldown {
			return false
		}
		if e.conn == nil {
			return true
		}
		s := e.conn()
		return s == connectivity.Ready || s == connectivity.Idle
	}
	idle := func(e *renewEndpoint) bool { return e.inflight == 0 }
	any := func(*renewEndpoint) bool { return true }
	for _, ok := range []func(*renewEndpoint) bool{fit, idle, any} {
		for i := range r.eps {
			k := (r.next + i) % len(r.eps)
			if e := r.eps[k]; ok(e) {
				r.next = k + 1
				e.inflight++
				return e
			}
		}
	}
	return nil // unreachable: any accepts every endpoint
}

// Renew renews id once through the endpoint pick chooses; see Store.Renew.
func (r *Renewer) Renew(ctx context.Context, id ID) (time.Duration, error) {
	e := r.pick()
	ttl, err := e.store.Renew(ctx, id)
	r.mu.Lock()
	e.inflight--
	if err != nil {
		e.failedAt = r.now()
	} else {
		e.failedAt = time.Time{}
	}
	r.mu.Unlock()
	return ttl, err
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
