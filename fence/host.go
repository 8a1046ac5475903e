package fence

import (
	"context"
	"time"
)

// HostGuests is Guests on a real host: it finds guests in /proc and kills
// them with SIGKILL, so fencing works with libvirtd hung or gone; then, if
// libvirtd answers, it destroys them there too so libvirt's view catches up.
type HostGuests struct {
	ProcDir string   // "/proc"
	RunDir  string   // libvirt's run directory, "/run/libvirt"
	Libvirt *Libvirt // may be nil: no tidy-up
}

// Running lists the QEMU processes of this host.
func (h HostGuests) Running(ctx context.Context) ([]Guest, error) {
	f, err := ThisHost(h.ProcDir, h.RunDir)
	if err != nil {
		return nil, err
	}
	qs, err := FindQEMU(h.ProcDir, f)
	if err != nil {
		return nil, err
	}
	gs := make([]Guest, len(qs))
	for i, q := range qs {
		gs[i] = Guest{UUID: q.UUID, Name: q.Name, PID: q.PID}
	}
	return gs, nil
}

// Kill SIGKILLs each guest's QEMU and waits (bounded by ctx) for it to go.
// libvirt's destroy would send SIGTERM first and may wait 10 s: too slow
// for the margin, so it only follows, for libvirt's bookkeeping.
func (h HostGuests) Kill(ctx context.Context, gs []Guest) []Guest {
	qs := make([]QEMU, 0, len(gs))
	for _, g := range gs {
		if g.PID > 0 {
			qs = append(qs, QEMU{PID: g.PID, UUID: g.UUID, Name: g.Name})
		}
	}
	left := KillQEMU(ctx, qs)
	var survivors []Guest
	for _, q := range left {
		survivors = append(survivors, Guest{UUID: q.UUID, Name: q.Name, PID: q.PID})
	}
	if h.Libvirt != nil {
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, g := range gs {
				h.Libvirt.Destroy(dctx, g.UUID)
			}
		}()
	}
	return survivors
}
