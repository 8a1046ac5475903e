package lease

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ID is an etcd lease ID. It prints and parses as etcdctl shows it (16 hex
// digits), so a value read with etcdctl can be pasted into
// `etcdctl lease timetolive`.
type ID clientv3.LeaseID

// String formats id as etcdctl prints it.
func (id ID) String() string { return fmt.Sprintf("%016x", int64(id)) }

// ParseID reads a lease ID as etcdctl prints it.
func ParseID(s string) (ID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("lease: %q is not a lease ID (16 hex digits, as etcdctl prints it)", s)
	}
	return ID(int64(v)), nil
}

// MarshalText writes the etcdctl form.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads the etcdctl form.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Holder names one host's session: the host name and the lease every key of
// that host is attached to. A key is "mine" when it names my Holder.
type Holder struct {
	Host  string
	Lease ID
}

func (h Holder) String() string { return h.Host + " (lease " + h.Lease.String() + ")" }

// HostRecord is the value of PREFIX/hosts/HOST.
type HostRecord struct {
	Host    string    `json:"host"`
	Lease   ID        `json:"lease"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Version string    `json:"version"`
}

// Record is the value of a domain or disk key: who holds it, for which
// domain, since when.
type Record struct {
	Host  string    `json:"host"`
	UUID  string    `json:"uuid"`
	Name  string    `json:"name"`
	Lease ID        `json:"lease"`
	Since time.Time `json:"since"`
}

// heldBy reports whether r is a claim of domain uuid by h: the only keys a
// host may overwrite or delete.
func (r Record) heldBy(h Holder, uuid string) bool {
	return r.Host == h.Host && r.Lease == h.Lease && r.UUID == uuid
}

// Migration is the value of PREFIX/migrations/UUID, attached to the
// destination's session.
type Migration struct {
	From  string    `json:"from"`
	To    string    `json:"to"`
	Since time.Time `json:"since"`
	// Disks are the migrating domain's disk IDs: while the record exists
	// no other domain may claim them, even if the source's keys are gone
	// before the destination holds them.
	Disks []string `json:"disks,omitempty"`
	// Prepared is set by the destination's incoming claim (its prepare),
	// in the Txn that accepts the source's keys. Only then does the
	// source's stop hand the keys over: a record whose destination never
	// claimed (its prepare refused, or never run) is a failed migration,
	// and the source's stop is an ordinary one.
	Prepared bool `json:"prepared,omitempty"`
}

// Want is the desired state of an HA domain.
type Want string

// The desired states an intent can hold.
const (
	WantRunning Want = "running"
	WantStopped Want = "stopped"
	WantFailed  Want = "failed"
)

// Intent is the value of PREFIX/intents/UUID (no lease: it outlives hosts).
type Intent struct {
	Want       Want      `json:"want"`
	Name       string    `json:"name"`
	Candidates []string  `json:"candidates,omitempty"`
	Restarts   int       `json:"restarts"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
	// Window is when the current max_restarts window began: restarts
	// count within ha.max_restarts per 10 minutes from here.
	Window time.Time `json:"window,omitempty"`
	// XML is the domain XML at its last start, without passwords, for
	// hosts that lack the domain (ha.define_missing).
	XML string `json:"xml,omitempty"`
}

// Drain is the value of PREFIX/drain/HOST.
type Drain struct {
	Since    time.Time `json:"since"`
	By       string    `json:"by"`
	Evacuate bool      `json:"evacuate"`
}

// UnfencedGuest is one guest a stopped watchdog left running.
type UnfencedGuest struct {
	UUID  string   `json:"uuid"`
	Name  string   `json:"name"`
	Disks []string `json:"disks,omitempty"`
}

// Unfenced is the value of PREFIX/unfenced/HOST: the guests that may still
// run on HOST although nothing there will fence them.
type Unfenced struct {
	Since  time.Time       `json:"since"`
	Guests []UnfencedGuest `json:"guests"`
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain structs of strings, numbers and times go through here.
		panic("lease: encoding a record: " + err.Error())
	}
	return string(b)
}

func decode[T any](key string, value []byte) (T, error) {
	var v T
	if err := json.Unmarshal(value, &v); err != nil {
		return v, fmt.Errorf("lease: key %s holds %q, which is not a virtlease record: %w", key, truncate(value), err)
	}
	return v, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// Audit is the value of PREFIX/audit/ID (no lease): one forced operator
// action, written in the Txn that performs it.
type Audit struct {
	Action      string    `json:"action"` // ActionForceRelease or ActionClearUnfenced
	Domain      string    `json:"domain"`
	UUID        string    `json:"uuid"`
	Host        string    `json:"host"` // the holder, or the host whose unfenced record was cleared
	By          string    `json:"by"`   // who ran it: USER@MACHINE
	EvenIfAlive bool      `json:"even_if_alive"`
	At          time.Time `json:"at"`
	Keys        []string  `json:"keys"` // every key deleted or rewritten
}
