package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

type statusOptions struct {
	JSON   bool
	Host   string // only this host and its domains
	Domain string // one domain, by name or UUID
}

// statusJSON is the stable shape `virtlease status --json` prints. Fields
// are only ever added.
type statusJSON struct {
	Revision   int64                      `json:"revision"`
	Hosts      []hostJSON                 `json:"hosts"`
	Domains    []domainJSON               `json:"domains"`
	Migrations map[string]lease.Migration `json:"migrations"`
	Intents    map[string]lease.Intent    `json:"intents"`
	Drains     map[string]lease.Drain     `json:"drains"`
	Unfenced   map[string]lease.Unfenced  `json:"unfenced"`
	Problems   []string                   `json:"problems,omitempty"`
}

// hostJSON is a host etcd knows of: registered (a live session), draining,
// or unfenced; a draining or unfenced host may have no session.
type hostJSON struct {
	lease.HostRecord
	TTLSeconds int64 `json:"ttl_seconds"` // -1 when unknown or not registered
	Registered bool  `json:"registered"`  // its hosts/HOST key exists
	Draining   bool  `json:"draining"`
	Unfenced   bool  `json:"unfenced"`
}

type domainJSON struct {
	lease.DomainStatus
	// HolderLive: the holder's hosts key exists on the lease the claim
	// names. false is what `release --force` needs to see.
	HolderLive bool `json:"holder_live"`
}

func runStatus(ctx context.Context, cfg Config, w io.Writer, opt statusOptions) error {
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
	defer cancel()
	snap, err := store.Snapshot(ctx)
	if err != nil {
		return etcdFailure(cfg, err)
	}
	out := buildStatus(snap, opt)
	if opt.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printStatus(w, out, opt)
	}
	switch {
	case opt.Domain != "" && len(out.Domains) == 0:
		return exit(hook.ExitRefused, fmt.Errorf("domain %s is not held by any host%s", opt.Domain, onHost(opt.Host)))
	case opt.Host != "" && opt.Domain == "" && len(out.Hosts) == 0 && len(out.Domains) == 0:
		return exit(hook.ExitRefused, fmt.Errorf("host %s is not known to etcd: not registered, not draining, no unfenced record, no claims", opt.Host))
	}
	return nil
}

func onHost(h string) string {
	if h == "" {
		return ""
	}
	return " on host " + h
}

// buildStatus filters snap as opt asks: --host keeps that host's row, its
// domains, drain, unfenced record and the migrations from or to it; DOMAIN
// keeps that domain (by name or UUID) and its migration and intent.
func buildStatus(snap lease.Snapshot, opt statusOptions) statusJSON {
	hostOK := func(h string) bool { return opt.Host == "" || h == opt.Host }
	uuid := strings.ToLower(opt.Domain)
	domainOK := func(name, id string) bool { return opt.Domain == "" || name == opt.Domain || id == uuid }

	out := statusJSON{Revision: snap.Revision, Hosts: []hostJSON{}, Domains: []domainJSON{}, Problems: snap.Problems,
		Migrations: map[string]lease.Migration{}, Intents: map[string]lease.Intent{},
		Drains: map[string]lease.Drain{}, Unfenced: map[string]lease.Unfenced{}}

	live := map[string]lease.ID{}
	for _, h := range snap.Hosts {
		live[h.Host] = h.Lease
	}
	wanted := map[string]bool{} // UUIDs shown
	for _, d := range snap.Domains {
		if !hostOK(d.Host) || !domainOK(d.Name, d.UUID) {
			continue
		}
		l, ok := live[d.Host]
		out.Domains = append(out.Domains, domainJSON{DomainStatus: d, HolderLive: ok && l == d.Lease})
		wanted[d.UUID] = true
	}
	for id, m := range snap.Migrations {
		if (hostOK(m.From) || hostOK(m.To)) && (opt.Domain == "" || wanted[id]) {
			out.Migrations[id] = m
		}
	}
	for id, in := range snap.Intents {
		if domainOK(in.Name, id) && (opt.Host == "" || wanted[id]) {
			out.Intents[id] = in
		}
	}
	for h, d := range snap.Drains {
		if hostOK(h) {
			out.Drains[h] = d
		}
	}
	for h, u := range snap.Unfenced {
		if hostOK(h) {
			out.Unfenced[h] = u
		}
	}

	// Hosts: every registered one, and the draining or unfenced ones that
	// have no session (a host drained for maintenance may be down).
	rows := map[string]*hostJSON{}
	for _, h := range snap.Hosts {
		if hostOK(h.Host) {
			rows[h.Host] = &hostJSON{HostRecord: h.HostRecord, TTLSeconds: int64(h.TTL / time.Second), Registered: true}
			if h.TTL < 0 {
				rows[h.Host].TTLSeconds = -1
			}
		}
	}
	row := func(h string) *hostJSON {
		if rows[h] == nil {
			rows[h] = &hostJSON{HostRecord: lease.HostRecord{Host: h}, TTLSeconds: -1}
		}
		return rows[h]
	}
	for h := range out.Drains {
		row(h).Draining = true
	}
	for h := range out.Unfenced {
		row(h).Unfenced = true
	}
	for _, r := range rows {
		out.Hosts = append(out.Hosts, *r)
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Host < out.Hosts[j].Host })
	return out
}

func (h hostJSON) state() string {
	var s []string
	if h.Registered {
		s = append(s, "alive")
	} else {
		s = append(s, "no session")
	}
	if h.Draining {
		s = append(s, "draining")
	}
	if h.Unfenced {
		s = append(s, "unfenced")
	}
	return strings.Join(s, ",")
}

func printStatus(w io.Writer, s statusJSON, opt statusOptions) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if opt.Domain == "" {
		fmt.Fprintln(tw, "HOST\tLEASE\tTTL\tSTATE\tVERSION\tSINCE")
		for _, h := range s.Hosts {
			id, ttl, since := "-", "-", "-"
			if h.Registered {
				id, since = h.Lease.String(), stamp(h.Started)
				ttl = "?"
				if h.TTLSeconds >= 0 {
					ttl = fmt.Sprintf("%ds", h.TTLSeconds)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, id, ttl, h.state(), dash(h.Version), since)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "DOMAIN\tUUID\tHOST\tSINCE\tDISKS")
	for _, d := range s.Domains {
		host := d.Host
		if !d.HolderLive {
			host += " (no session)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.UUID, host, stamp(d.Since), dash(strings.Join(d.Disks, ",")))
	}
	if len(s.Drains) > 0 && opt.Domain == "" {
		fmt.Fprintln(tw, "\nDRAINING\tSINCE\tBY\tEVACUATE")
		for _, h := range sortedKeys(s.Drains) {
			d := s.Drains[h]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\n", h, stamp(d.Since), dash(d.By), d.Evacuate)
		}
	}
	if len(s.Unfenced) > 0 && opt.Domain == "" {
		fmt.Fprintln(tw, "\nUNFENCED ON\tSINCE\tGUESTS")
		for _, h := range sortedKeys(s.Unfenced) {
			u := s.Unfenced[h]
			var g []string
			for _, x := range u.Guests {
				g = append(g, x.Name+" ("+x.UUID+")")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", h, stamp(u.Since), dash(strings.Join(g, ", ")))
		}
	}
	if len(s.Intents) > 0 {
		// HA domains: what should run (intent) beside what does (holder).
		holders := map[string]string{}
		for _, d := range s.Domains {
			holders[d.UUID] = d.Host
		}
		fmt.Fprintln(tw, "\nHA DOMAIN\tUUID\tWANT\tHOLDER\tCANDIDATES\tRESTARTS\tLAST")
		for _, id := range sortedKeys(s.Intents) {
			in := s.Intents[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", in.Name, id, in.Want, dash(holders[id]),
				dash(strings.Join(in.Candidates, ",")), in.Restarts, dash(in.Reason))
		}
	}
	if len(s.Migrations) > 0 {
		fmt.Fprintln(tw, "\nMIGRATING\tFROM\tTO\tSINCE")
		for _, id := range sortedKeys(s.Migrations) {
			m := s.Migrations[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id, m.From, m.To, stamp(m.Since))
		}
	}
	for _, p := range s.Problems {
		fmt.Fprintf(tw, "problem: %s\n", p)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
