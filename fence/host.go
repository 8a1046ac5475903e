package fence

import (
	"context"
	"sync/atomic"
	"time"
)

// HostGuests is Guests on a real host: it finds guests in /proc and kills
// them with SIGKILL, so fencing works with libvirtd hung or gone; then, if
// libvirtd answers, it destroys them there too so libvirt's view catches up.
// Use NewHostGuests.
type HostGuests struct {
	procs   *Procs
	libvirt *Libvirt // nil: no tidy-up
	// tidying is set while a libvirt tidy-up runs: a hung libvirtd during
	// sticky fencing (a kill round every interval) must not pile them up.
	tidying atomic.Bool
}

// NewHostGuests returns the guests of this machine as procDir ("/proc")
// shows them; lv (may be nil) is told about kills afterwards.
func NewHostGuests(procDir string, lv *Libvirt) *HostGuests {
	return &HostGuests{procs: NewProcs(procDir), libvirt: lv}
}

// Running lists the QEMU processes of this host. With some processes
// unreadable in time it returns the guests it found and an error (see
// Procs.Find): the fence kills those and does not take them for all.
func (h *HostGuests) Running(ctx context.Context) ([]Guest, error) {
	qs, err := h.procs.Find(ctx)
	gs := make([]Guest, len(qs))
	for i, q := range qs {
		gs[i] = Guest{UUID: q.UUID, Name: q.Name, PID: q.PID}
	}
	return gs, err
}

// Kill SIGKILLs each guest's QEMU and waits (bounded by ctx) for it to go.
// libvirt's destroy would send SIGTERM first and may wait 10 s: too slow
// for the margin, so it only follows, for libvirt's bookkeeping, with at
// most one such tidy-up in flight.
func (h *HostGuests) Kill(ctx context.Context, gs []Guest) []Guest {
	qs := make([]QEMU, 0, len(gs))
	for _, g := range gs {
		if g.PID > 0 {
			qs = append(qs, QEMU{PID: g.PID, UUID: g.UUID, Name: g.Name})
		}
	}
	left := h.procs.Kill(ctx, qs)
	var survivors []Guest
	for _, q := range left {
		survivors = append(survivors, Guest{UUID: q.UUID, Name: q.Name, PID: q.PID})
	}
	if h.libvirt != nil && len(gs) > 0 && h.tidying.CompareAndSwap(false, true) {
		go func() {
			defer h.tidying.Store(false)
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, g := range gs {
				h.libvirt.Destroy(dctx, g.UUID)
			}
		}()
	}
	return survivors
}
