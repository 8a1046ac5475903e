package lease

import "testing"

func TestKeysLayout(t *testing.T) {
	k := NewKeys("/virtlease/")
	tests := []struct {
		name, got, want string
	}{
		{"host", k.Host("host-a"), "/virtlease/hosts/host-a"},
		{"domain", k.Domain("4dea22b3-1d52-d8f3-2516-782e98ab3fa0"), "/virtlease/domains/4dea22b3-1d52-d8f3-2516-782e98ab3fa0"},
		{"rbd disk", k.Disk("rbd/pool/ns/image"), "/virtlease/disks/rbd%2Fpool%2Fns%2Fimage"},
		{"file disk", k.Disk("file/var/lib/shared/vm1.qcow2"), "/virtlease/disks/file%2Fvar%2Flib%2Fshared%2Fvm1.qcow2"},
		{"dot-dot stays inside", k.Disk("../../hosts/host-a"), "/virtlease/disks/..%2F..%2Fhosts%2Fhost-a"},
		{"space and percent", k.Disk("nbd/h:10809/a b%"), "/virtlease/disks/nbd%2Fh:10809%2Fa%20b%25"},
		{"hostile host name", k.Host("a/../domains/x"), "/virtlease/hosts/a%2F..%2Fdomains%2Fx"},
		{"migration", k.Migration("u"), "/virtlease/migrations/u"},
		{"intent", k.Intent("u"), "/virtlease/intents/u"},
		{"drain", k.Drain("host-a"), "/virtlease/drain/host-a"},
		{"run", k.Run("u"), "/virtlease/runs/u"},
		{"unfenced", k.Unfenced("host-a"), "/virtlease/unfenced/host-a"},
		{"dir", k.Dir("disks"), "/virtlease/disks/"},
		{"default prefix", NewKeys("").Domain("u"), "/virtlease/domains/u"},
		{"custom prefix", NewKeys("/c1/vl").Domain("u"), "/c1/vl/domains/u"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestKeysNameRoundTrip(t *testing.T) {
	k := NewKeys("")
	for _, id := range []string{"rbd/pool/img", "file/a b/c%d", "../x", "iscsi/iqn.2004-04.com.example:t/1"} {
		if got := k.Name(k.Disk(id)); got != id {
			t.Errorf("Name(Disk(%q)) = %q", id, got)
		}
	}
}

func TestParseID(t *testing.T) {
	id, err := ParseID("694d9ac1b3e4f20a")
	if err != nil || id.String() != "694d9ac1b3e4f20a" {
		t.Fatalf("ParseID round trip: %v %v", id, err)
	}
	if _, err := ParseID("xyz"); err == nil {
		t.Fatal("ParseID accepted garbage")
	}
}
