package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/urfave/cli/v2"
)

// bashCompletion is what `virtlease completion bash` prints. It asks the
// binary itself (--generate-bash-completion, urfave/cli's protocol) rather
// than listing words, so it never goes stale. It runs the words typed so far
// as an array, without eval, and needs nothing from bash-completion.
const bashCompletion = `# bash completion for virtlease
# install: virtlease completion bash > /usr/share/bash-completion/completions/virtlease
_virtlease() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	local opts
	if [[ "$cur" == -* ]]; then
		opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
	else
		opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
	fi
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _virtlease virtlease
`

// completionTimeout bounds the etcd read behind a TAB: a shell must not hang.
const completionTimeout = time.Second

// completeDomains completes a command's flags, and domain names held in
// etcd for its DOMAIN argument. Any problem (no config, etcd down) completes
// nothing: a TAB press is no place for error messages.
func completeDomains(getenv func(string) string, configFlag *cli.StringFlag) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		for _, f := range c.Command.Flags {
			for _, n := range f.Names() {
				if len(n) > 1 {
					fmt.Fprintln(c.App.Writer, "--"+n)
				}
			}
		}
		cfg, err := loadValid(c, getenv)
		if err != nil {
			return
		}
		writeDomainNames(c.App.Writer, cfg)
	}
}

func writeDomainNames(w io.Writer, cfg Config) {
	store, closeFn, err := dial(cfg)
	if err != nil {
		return
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	snap, err := store.Snapshot(ctx)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, d := range snap.Domains {
		seen[d.Name] = true
	}
	for _, u := range snap.Unfenced {
		for _, g := range u.Guests {
			seen[g.Name] = true
		}
	}
	var names []string
	for n := range seen {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintln(w, n)
	}
}
