package hook

import "errors"

// Call is one invocation of the hook by libvirt: `qemu NAME OP SUBOP EXTRA`.
type Call struct {
	// Name is the domain's name on this host, for messages; the UUID in the
	// XML is its identity.
	Name string
	// Op is the lifecycle step: prepare, start, started, stopped, release,
	// migrate, restore, reconnect, attach, …
	Op string
	// SubOp is begin, end or "-".
	SubOp string
	// Extra is libvirt's fourth argument, "-" on most calls; newer libvirt
	// passes a reason there. Empty when libvirt passed none.
	Extra string
}

// ParseArgs reads the hook's arguments without argv[0].
//
// It accepts any fourth argument and ignores any beyond it: libvirt has
// changed what it passes there, and a hook that rejects an argument it does
// not know would refuse every start after a libvirt upgrade. It returns an
// error when fewer than three arguments are given or the name or operation
// is empty.
func ParseArgs(args []string) (Call, error) {
	if len(args) < 3 {
		return Call{}, errors.New("usage: qemu NAME OP SUBOP [EXTRA]")
	}
	c := Call{Name: args[0], Op: args[1], SubOp: args[2]}
	if len(args) > 3 {
		c.Extra = args[3]
	}
	if c.Name == "" {
		return Call{}, errors.New("hook arguments: empty domain name (usage: qemu NAME OP SUBOP [EXTRA])")
	}
	if c.Op == "" {
		return Call{}, errors.New("hook arguments: empty operation (usage: qemu NAME OP SUBOP [EXTRA])")
	}
	return c, nil
}
