// Package labconf reads durations from a lab host's virtlease config (the
// two-level YAML lab.sh writes: "session:" then "  ttl: 6s"), for the lab
// tools that must agree with the product's timings (scripts/chaos,
// scripts/labhwdog). It is not the product's config parser, on purpose:
// the tools check the product from outside.
package labconf

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// Durations sets each *d in want (keyed "section.key", e.g.
// "session.ttl") that the config at path names; the others keep their
// values. A named key that is not a duration is an error.
func Durations(path string, want map[string]*time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			section = strings.TrimSuffix(strings.TrimSpace(line), ":")
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		dst := want[section+"."+k]
		if !ok || dst == nil {
			continue
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s: %s.%s: %v", path, section, k, err)
		}
		*dst = d
	}
	return sc.Err()
}
