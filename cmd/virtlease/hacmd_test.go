package main

import (
	"strings"
	"testing"
)

func TestHAResetAndStatus(t *testing.T) {
	l := newOpsLab(t)
	const uuid = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
	failed := `{"want":"failed","name":"web7","candidates":["host-b"],"restarts":3,"reason":"gave up after 3 restarts","since":"2026-11-25T00:00:00Z"}`
	if _, err := l.cli.Put(l.ctx(), l.store.Keys().Intent(uuid), failed); err != nil {
		t.Fatal(err)
	}
	// Two HA domains named web8 (a copied XML with a new UUID), and a
	// deliberately stopped one.
	for id, v := range map[string]string{
		"cccccccc-cccc-cccc-cccc-cccccccccccc": `{"want":"failed","name":"web8","restarts":3,"since":"2026-11-25T00:00:00Z"}`,
		"dddddddd-dddd-dddd-dddd-dddddddddddd": `{"want":"failed","name":"web8","restarts":3,"since":"2026-11-25T00:00:00Z"}`,
		"eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee": `{"want":"stopped","name":"quiet","reason":"stopped on host-a","since":"2026-11-25T00:00:00Z"}`,
	} {
		if _, err := l.cli.Put(l.ctx(), l.store.Keys().Intent(id), v); err != nil {
			t.Fatal(err)
		}
	}
	code, out, stderr := l.run(nil, "status")
	if code != 0 || !strings.Contains(out, "HA DOMAIN") || !strings.Contains(out, "web7") || !strings.Contains(out, "failed") || !strings.Contains(out, "gave up") {
		t.Fatalf("status: exit %d\n%s%s", code, out, stderr)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"unknown domain", []string{"ha", "reset", "nope"}, 1, ""},
		{"no domain", []string{"ha", "reset"}, 2, ""},
		{"by name", []string{"ha", "reset", "web7"}, 0, "reset to running"},
		{"by UUID", []string{"ha", "reset", uuid}, 0, "reset to running"},
		{"name two domains share", []string{"ha", "reset", "web8"}, 1, ""},
		{"one of them by UUID", []string{"ha", "reset", "cccccccc-cccc-cccc-cccc-cccccccccccc"}, 0, "reset to running"},
		{"a deliberately stopped guest", []string{"ha", "reset", "quiet"}, 1, ""},
		{"a deliberately stopped guest, --stopped", []string{"ha", "reset", "--stopped", "quiet"}, 0, "reset to running"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := l.run(nil, tc.args...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("exit %d (want %d), out %q, stderr %q", code, tc.wantCode, out, stderr)
			}
		})
	}
	snap, err := l.store.Snapshot(l.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if in := snap.Intents[uuid]; in.Want != "running" || in.Restarts != 0 {
		t.Fatalf("intent after reset: %+v", in)
	}
	if in := snap.Intents["dddddddd-dddd-dddd-dddd-dddddddddddd"]; in.Want != "failed" {
		t.Fatalf("the other web8 was reset by name: %+v", in)
	}
}

func TestMigrateURIValidation(t *testing.T) {
	c := DefaultConfig()
	c.Host = "host-a"
	c.HA.MigrateURI = "qemu+ssh://host-b/system"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ha.migrate_uri") {
		t.Fatalf("a migrate_uri without {host} was accepted: %v", err)
	}
}
