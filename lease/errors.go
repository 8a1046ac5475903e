package lease

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrUnavailable means etcd did not answer in time; nothing was decided.
	ErrUnavailable = errors.New("lease: etcd unavailable")
	// ErrNoSession means this host's session is not live in etcd: its
	// hosts/HOST key is gone or names another lease.
	ErrNoSession = errors.New("lease: this host has no live session in etcd")
	// ErrHostTaken means another live session already registered this host name.
	ErrHostTaken = errors.New("lease: host name already registered by another live session")
	// ErrConflict means the keys kept changing under a claim or release
	// through every retry.
	ErrConflict = errors.New("lease: keys kept changing, gave up")
	// ErrNotIncoming means a claim named an incoming migration that etcd
	// does not record (any more): handed over, failed, recorded under an
	// earlier session, or a later migration's record. A *HeldError matches
	// it with errors.Is.
	ErrNotIncoming = errors.New("lease: no such incoming migration is recorded")
)

// HeldError refuses a claim: Key is held by another domain or host.
// Its message is the sentence an operator reads in `virsh start`'s error.
type HeldError struct {
	Key  string // the etcd key in conflict
	Disk string // the disk ID when Key is a disk key, "" for the domain key
	Want string // name of the domain that was refused
	Held Record // who holds Key
	Why  string // set when the holder is not a live claim (e.g. an unfenced host); replaces the usual sentence
	// notIncoming: the claim's incoming migration is not recorded.
	notIncoming bool
}

// Is makes errors.Is(err, ErrNotIncoming) true for the refusal of an
// incoming claim whose migration is not recorded.
func (e *HeldError) Is(target error) bool { return target == ErrNotIncoming && e.notIncoming }

func (e *HeldError) Error() string {
	since := e.Held.Since.UTC().Format(time.RFC3339)
	if e.Why != "" {
		return fmt.Sprintf("%s; refusing to start %s here", e.Why, e.Want)
	}
	if e.Disk == "" {
		return fmt.Sprintf("domain %s (%s) is running on host %s since %s; refusing to start it here",
			e.Held.Name, e.Held.UUID, e.Held.Host, since)
	}
	return fmt.Sprintf("disk %s is in use by domain %s (%s) on host %s since %s; refusing to start %s here",
		e.Disk, e.Held.Name, e.Held.UUID, e.Held.Host, since, e.Want)
}

// HostTakenError refuses a registration: another live session holds the
// host name. It matches ErrHostTaken with errors.Is.
type HostTakenError struct {
	Key    string
	Holder HostRecord // Lease is the lease the key is attached to
}

func (e *HostTakenError) Error() string {
	return fmt.Sprintf("%v: %s is held by lease %s (pid %d, started %s): is a second machine using the host name %q?",
		ErrHostTaken, e.Key, e.Holder.Lease, e.Holder.PID, e.Holder.Started.UTC().Format(time.RFC3339), e.Holder.Host)
}

// Is makes errors.Is(err, ErrHostTaken) true.
func (e *HostTakenError) Is(target error) bool { return target == ErrHostTaken }
