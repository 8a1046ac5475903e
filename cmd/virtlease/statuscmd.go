package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

type statusOptions struct {
	JSON   bool
	Host   string // only this host's domains
	Domain string // one domain, by name or UUID
}

// statusJSON is the stable shape `virtlease status --json` prints.
type statusJSON struct {
	Revision   int64                      `json:"revision"`
	Hosts      []hostJSON                 `json:"hosts"`
	Domains    []lease.DomainStatus       `json:"domains"`
	Migrations map[string]lease.Migration `json:"migrations"`
	Intents    map[string]lease.Intent    `json:"intents"`
	Drains     map[string]lease.Drain     `json:"drains"`
	Unfenced   map[string]lease.Unfenced  `json:"unfenced"`
	Problems   []string                   `json:"problems,omitempty"`
}

type hostJSON struct {
	lease.HostRecord
	TTLSeconds int64 `json:"ttl_seconds"`
	Draining   bool  `json:"draining"`
}

func runStatus(ctx context.Context, cfg Config, w io.Writer, opt statusOptions) error {
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	snap, err := store.Snapshot(ctx)
	if err != nil {
		return exit(hook.ExitUnavailable, err)
	}
	var domains []lease.DomainStatus
	for _, d := range snap.Domains {
		if opt.Host != "" && d.Host != opt.Host {
			continue
		}
		if opt.Domain != "" && d.Name != opt.Domain && d.UUID != strings.ToLower(opt.Domain) {
			continue
		}
		domains = append(domains, d)
	}
	out := statusJSON{Revision: snap.Revision, Domains: domains, Migrations: snap.Migrations,
		Intents: snap.Intents, Drains: snap.Drains, Unfenced: snap.Unfenced, Problems: snap.Problems}
	if out.Domains == nil {
		out.Domains = []lease.DomainStatus{}
	}
	out.Hosts = []hostJSON{}
	for _, h := range snap.Hosts {
		_, draining := snap.Drains[h.Host]
		out.Hosts = append(out.Hosts, hostJSON{HostRecord: h.HostRecord, TTLSeconds: int64(h.TTL / time.Second), Draining: draining})
	}
	if opt.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printStatus(w, out, opt)
	}
	if opt.Domain != "" && len(domains) == 0 {
		return exit(hook.ExitRefused, fmt.Errorf("domain %s is not held by any host", opt.Domain))
	}
	return nil
}

func printStatus(w io.Writer, s statusJSON, opt statusOptions) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if opt.Domain == "" {
		fmt.Fprintln(tw, "HOST\tLEASE\tTTL\tSTATE\tVERSION\tSINCE")
		for _, h := range s.Hosts {
			state := "alive"
			if h.Draining {
				state = "draining"
			}
			ttl := "?"
			if h.TTLSeconds >= 0 {
				ttl = fmt.Sprintf("%ds", h.TTLSeconds)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.Lease, ttl, state, h.Version, h.Started.UTC().Format(time.RFC3339))
		}
		for host, u := range s.Unfenced {
			fmt.Fprintf(tw, "%s\t-\t-\tunfenced (%d guests)\t\t%s\n", host, len(u.Guests), u.Since.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "DOMAIN\tUUID\tHOST\tSINCE\tDISKS")
	for _, d := range s.Domains {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.UUID, d.Host, d.Since.UTC().Format(time.RFC3339), strings.Join(d.Disks, ","))
	}
	if len(s.Migrations) > 0 {
		fmt.Fprintln(tw, "\nMIGRATING\tFROM\tTO\tSINCE")
		for uuid, m := range s.Migrations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", uuid, m.From, m.To, m.Since.UTC().Format(time.RFC3339))
		}
	}
	for _, p := range s.Problems {
		fmt.Fprintf(tw, "problem: %s\n", p)
	}
	tw.Flush()
}
