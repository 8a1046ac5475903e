package hook

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/virtlease/virtlease/lease"
)

const domainsDir = "../testdata/domains"

func TestParseDomainFixtures(t *testing.T) {
	tests := []struct {
		file    string
		want    Domain
		wantErr string // substring; empty when ParseDomain must succeed
	}{
		{
			file: "rbd-auth-hosts.xml",
			want: Domain{UUID: "6a1c2f0e-3b9d-4c27-9f51-0d2e8b7a4c11", Name: "vm-rbd", Mode: ModeOn, Disks: []Disk{
				{ID: "rbd/libvirt-pool/vm-rbd-disk0", Target: "vda"},
				{ID: "rbd/libvirt-pool/vm-rbd-data", Target: "vdb"},
			}},
		},
		{
			file: "rbd-namespace.xml",
			want: Domain{UUID: "0e7f5b0c-9a4e-4d0a-8c1f-2b6d3e9a7f21", Name: "vm-rbd-ns", Mode: ModeOn, Disks: []Disk{
				{ID: "rbd/vms/tenant-a/vm-rbd-ns-root", Target: "vda"},
			}},
		},
		{
			file: "nbd.xml",
			want: Domain{UUID: "2f9d8c7b-6a5e-4d3c-b2a1-908f7e6d5c4b", Name: "vm-nbd", Mode: ModeOn, Disks: []Disk{
				{ID: "nbd/nbd.example.net:10809/vm-nbd-root", Target: "vda"},
				{ID: "nbd/nbd-1.example.net:10810/scratch", Target: "vdb"},
				{ID: "nbd/[fd00::10]:10809/", Target: "vdc"},
				{ID: "nbd/unix:/run/nbd/export.sock/local-export", Target: "vdd",
					Warning: "an nbd unix socket is local to this host; the export behind it is not identified"},
			}},
		},
		{
			file: "iscsi.xml",
			want: Domain{UUID: "5b4a3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", Name: "vm-iscsi", Mode: ModeOn, Disks: []Disk{
				{ID: "iscsi/iqn.2013-06.com.example:storage.vms/1", Target: "sda"},
				{ID: "iscsi/iqn.2013-06.com.example:storage.boot/0", Target: "vda"},
			}},
		},
		{
			file: "gluster-http.xml",
			want: Domain{UUID: "8c7b6a59-4e3d-4c2b-a190-fedcba987654", Name: "vm-gluster", Mode: ModeOn, Disks: []Disk{
				{ID: "gluster/gv0/images/vm-gluster.qcow2", Target: "vda"},
				{ID: "https/exports/vm-gluster-seed.img", Target: "vdb"},
			}},
		},
		{
			file: "file-backing-chain.xml",
			want: Domain{UUID: "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a", Name: "vm-file", Mode: ModeOn, Disks: []Disk{
				{ID: "file/var/lib/shared/vm1.qcow2", Target: "vda"},
				{ID: "file/var/lib/shared/data/vm1-data.raw", Target: "vdb"},
			}},
		},
		{
			file: "block-by-id.xml",
			want: Domain{UUID: "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7", Name: "vm-block", Mode: ModeOn, Disks: []Disk{
				{ID: "block/dev/disk/by-id/wwn-0x600a098038304437415d4b6a59684a52", Target: "vda"},
				{ID: "block/dev/mapper/3600a098038304437415d4b6a59684a53", Target: "vdb"},
				{ID: "block/dev/vg_shared/vm-block-swap", Target: "vdc"},
			}},
		},
		{
			file: "block-sdb.xml",
			want: Domain{UUID: "4f5a6b7c-8d9e-4fa0-b1c2-d3e4f5a6b7c8", Name: "vm-sdb", Mode: ModeOn, Disks: []Disk{
				{ID: "block/dev/sdb", Target: "vda",
					Warning: "/dev/sdb is a kernel device name that can differ between hosts; name it by /dev/disk/by-id/… so the claim protects the same disk everywhere"},
				{ID: "block/dev/nvme0n1p2", Target: "vdb",
					Warning: "/dev/nvme0n1p2 is a kernel device name that can differ between hosts; name it by /dev/disk/by-id/… so the claim protects the same disk everywhere"},
			}},
		},
		{
			file: "lun.xml",
			want: Domain{UUID: "5a6b7c8d-9eaf-40b1-82c3-e4f5a6b7c8d9", Name: "vm-lun", Mode: ModeOn, Disks: []Disk{
				{ID: "block/dev/disk/by-id/scsi-36001405a1b2c3d4e5f60718293a4b5c6", Target: "sda"},
			}},
		},
		{
			file: "cdrom.xml",
			want: Domain{UUID: "6b7c8d9e-af01-4b2c-93d4-f5a6b7c8d9e0", Name: "vm-cdrom", Mode: ModeOn, Disks: []Disk{
				{ID: "file/var/lib/shared/vm-cdrom.qcow2", Target: "vda"},
			}},
		},
		{
			file: "readonly.xml",
			want: Domain{UUID: "7c8d9eaf-0b1c-4d2e-a4f5-a6b7c8d9e0f1", Name: "vm-readonly", Mode: ModeOn, Disks: []Disk{
				{ID: "file/var/lib/shared/vm-readonly.qcow2", Target: "vda"},
			}},
		},
		{
			file: "shareable.xml",
			want: Domain{UUID: "8d9eaf0b-1c2d-4e3f-b5a6-b7c8d9e0f1a2", Name: "vm-shareable", Mode: ModeOn, Disks: []Disk{
				{ID: "file/var/lib/shared/vm-shareable.qcow2", Target: "vda"},
			}},
		},
		{
			file: "volume.xml",
			want: Domain{UUID: "9eaf0b1c-2d3e-4f4a-86b7-c8d9e0f1a2b3", Name: "vm-volume", Mode: ModeOn, Disks: []Disk{
				{ID: "volume/shared-nfs/vm-volume-root.qcow2", Target: "vda"},
				{ID: "volume/iscsi-pool/unit:0:0:1", Target: "sda"},
			}},
		},
		{
			file: "mode-ha-hosts.xml",
			want: Domain{UUID: "af0b1c2d-3e4f-405a-97c8-d9e0f1a2b3c4", Name: "vm-ha", Mode: ModeHA,
				Hosts: []string{"host-a", "host-b", "host-c"},
				Disks: []Disk{{ID: "file/var/lib/shared/vm-ha.qcow2", Target: "vda"}}},
		},
		{
			// off claims nothing, but the disks are still listed: a start
			// is refused over another host's live claim on them.
			file: "mode-off.xml",
			want: Domain{UUID: "b0c1d2e3-f4a5-4b6c-87d8-e9f0a1b2c3d4", Name: "vm-off", Mode: ModeOff,
				Disks: []Disk{{ID: "file/var/lib/shared/vm-off.qcow2", Target: "vda"}}},
		},
		{
			file:    "mode-bogus.xml",
			wantErr: `domain XML: unknown virtlease mode "always" in <metadata> (want on, ha or off)`,
		},
		{
			// Only the URI counts: another namespace's <vl:lease> and an
			// unqualified <lease> are someone else's.
			file: "mode-other-prefix.xml",
			want: Domain{UUID: "d2e3f4a5-b6c7-4d8e-a9f0-a1b2c3d4e5f6", Name: "vm-prefix", Mode: ModeHA,
				Hosts: []string{"host-b"},
				Disks: []Disk{{ID: "file/var/lib/shared/vm-prefix.qcow2", Target: "vda"}}},
		},
		{
			file: "mode-root-namespace.xml",
			want: Domain{UUID: "e3f4a5b6-c7d8-4e9f-b0a1-b2c3d4e5f6a7", Name: "vm-rootns", Mode: ModeOff,
				Disks: []Disk{{ID: "file/var/lib/shared/vm-rootns.qcow2", Target: "vda"}}},
		},
		{
			// The first spelling of a disk wins; a readonly mention of it
			// adds nothing.
			file: "several-duplicates.xml",
			want: Domain{UUID: "f4a5b6c7-d8e9-4fa0-b1c2-d3e4f5a6b7c8", Name: "vm-many", Mode: ModeOn, Disks: []Disk{
				{ID: "rbd/vms/vm-many-root", Target: "vda"},
				{ID: "file/var/lib/shared/vm-many-data.qcow2", Target: "vdb"},
				{ID: "block/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", Target: "vde"},
			}},
		},
		{
			// Case, trailing dots and IP spellings of one server or
			// target give one ID; a data file, a block copy's
			// destination and SCSI LUNs passed through are claimed.
			file: "storage-spellings.xml",
			want: Domain{UUID: "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", Name: "vm-spellings", Mode: ModeOn, Disks: []Disk{
				{ID: "nbd/nbd.example.net:10809/root", Target: "vda"},
				{ID: "nbd/[fd00::10]:10809/scratch", Target: "vdb"},
				{ID: "iscsi/iqn.2013-06.com.example:storage.vms/2", Target: "sda"},
				{ID: "file/var/lib/shared/vm-spellings.qcow2", Target: "vdc"},
				{ID: "file/var/lib/shared/vm-spellings.raw", Target: "vdc"},
				{ID: "file/var/lib/shared/vm-spellings-data.raw", Target: "vdd"},
				{ID: "file/var/lib/shared/vm-spellings-data.copy", Target: "vdd"},
				{ID: "iscsi/iqn.2013-06.com.example:storage.db/3"},
				{ID: "scsihost/scsi_host2/0:1:4",
					Warning: "a SCSI host adapter address names a LUN of this host only; the LUN behind it is not identified"},
			}},
		},
		{
			file: "no-disks.xml",
			want: Domain{UUID: "a5b6c7d8-e9f0-4a1b-82c3-d4e5f6a7b8c9", Name: "vm-diskless", Mode: ModeOn},
		},
		{
			file:    "relative-path.xml",
			wantErr: `domain XML: disk vda: relative path "images/vm-relative.qcow2" cannot be matched across hosts`,
		},
		{
			file:    "bad-uuid.xml",
			wantErr: `domain XML: invalid <uuid> "not-a-uuid"`,
		},
	}
	covered := make(map[string]bool)
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(strings.TrimSuffix(tt.file, ".xml"), func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join(domainsDir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseDomain(text)
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
	// A fixture without a case would only feed the fuzzer: make adding
	// one without its expectations fail.
	files, err := filepath.Glob(filepath.Join(domainsDir, "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("fixture %s has no test case", filepath.Base(f))
		}
	}
}

func checkParse(t *testing.T, got Domain, err error, want Domain, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil {
			t.Fatalf("ParseDomain succeeded with %+v, want error containing %q", got, wantErr)
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("ParseDomain error = %q, want it to contain %q", err, wantErr)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseDomain error spans lines: %q", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("ParseDomain: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseDomain =\n%+v\nwant\n%+v", got, want)
	}
}

// domainXML wraps devices and metadata in the smallest domain libvirt
// would write, for cases that are about one element.
func domainXML(uuid, metadata, devices string) []byte {
	return []byte(`<domain type='kvm'><name>vm</name><uuid>` + uuid + `</uuid>` + metadata +
		`<memory unit='KiB'>1024</memory><os><type>hvm</type></os><devices>` + devices + `</devices></domain>`)
}

const testUUID = "11111111-2222-4333-8444-555555555555"

func TestParseDomainDisks(t *testing.T) {
	tests := []struct {
		name    string
		disk    string
		want    []Disk
		wantErr string
	}{
		// ok
		{name: "device attribute absent means disk",
			disk: `<disk type='file'><source file='/srv/a.img'/><target dev='vda'/></disk>`,
			want: []Disk{{ID: "file/srv/a.img", Target: "vda"}}},
		{name: "type attribute absent means file",
			disk: `<disk device='disk'><source file='/srv/a.img'/><target dev='vda'/></disk>`,
			want: []Disk{{ID: "file/srv/a.img", Target: "vda"}}},
		{name: "no target",
			disk: `<disk type='file'><source file='/srv/a.img'/></disk>`,
			want: []Disk{{ID: "file/srv/a.img"}}},
		{name: "file path cleaned, case kept",
			disk: `<disk type='file'><source file='/srv//VMs/../VMs/./A.img'/></disk>`,
			want: []Disk{{ID: "file/srv/VMs/A.img"}}},
		{name: "transient disk is still claimed",
			disk: `<disk type='file'><source file='/srv/a.img'/><target dev='vda'/><transient/></disk>`,
			want: []Disk{{ID: "file/srv/a.img", Target: "vda"}}},
		{name: "rbd with a snapshot name keeps the image",
			disk: `<disk type='network'><source protocol='rbd' name='p/img'><snapshot name='s1'/></source></disk>`,
			want: []Disk{{ID: "rbd/p/img"}}},
		{name: "nbd port normalised",
			disk: `<disk type='network'><source protocol='nbd' name='e'><host name='srv' port='010809'/></source></disk>`,
			want: []Disk{{ID: "nbd/srv:10809/e"}}},
		{name: "nbd bracketed IPv6 host",
			disk: `<disk type='network'><source protocol='nbd' name='e'><host name='[fd00::1]'/></source></disk>`,
			want: []Disk{{ID: "nbd/[fd00::1]:10809/e"}}},
		{name: "iscsi lun normalised",
			disk: `<disk type='network' device='lun'><source protocol='iscsi' name='iqn.2000-01.com.example:t/007'/></disk>`,
			want: []Disk{{ID: "iscsi/iqn.2000-01.com.example:t/7"}}},
		{name: "nfs protocol",
			disk: `<disk type='network'><source protocol='nfs' name='/export/vm.img'><host name='nfs1'/></source></disk>`,
			want: []Disk{{ID: "nfs/export/vm.img"}}},
		{name: "dir",
			disk: `<disk type='dir'><source dir='/srv/vvfat/'/></disk>`,
			want: []Disk{{ID: "dir/srv/vvfat"}}},
		{name: "nvme",
			disk: `<disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='1'>` +
				`<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source><target dev='vde'/></disk>`,
			want: []Disk{{ID: "nvme/0000:01:00.0/1", Target: "vde", Warning: "an NVMe PCI address names a device of this host only"}}},
		{name: "vhostuser",
			disk: `<disk type='vhostuser' device='disk'><source type='unix' path='/run/vhost-blk.sock'/></disk>`,
			want: []Disk{{ID: "vhostuser/run/vhost-blk.sock", Warning: "a vhost-user socket is local to this host; the storage behind it is not identified"}}},
		{name: "vhostvdpa",
			disk: `<disk type='vhostvdpa' device='disk'><source dev='/dev/vhost-vdpa-0'/></disk>`,
			want: []Disk{{ID: "vhostvdpa/dev/vhost-vdpa-0", Warning: "a vDPA device is local to this host; the storage behind it is not identified"}}},
		{name: "nbd IPv4-mapped IPv6 is the IPv4 address",
			disk: `<disk type='network'><source protocol='nbd' name='e'><host name='::ffff:192.0.2.1'/></source></disk>`,
			want: []Disk{{ID: "nbd/192.0.2.1:10809/e"}}},
		{name: "nbd canonical names keep their ID",
			disk: `<disk type='network'><source protocol='nbd' name='e'><host name='nbd-1.example.net'/></source></disk>`,
			want: []Disk{{ID: "nbd/nbd-1.example.net:10809/e"}}},
		{name: "iscsi eui name lower-cased",
			disk: `<disk type='network' device='lun'><source protocol='iscsi' name='eui.02004567A425678D/1'/></disk>`,
			want: []Disk{{ID: "iscsi/eui.02004567a425678d/1"}}},
		{name: "block data file of a qcow2 image",
			disk: `<disk type='file'><source file='/srv/a.qcow2'><dataStore type='block'><format type='raw'/><source dev='/dev/disk/by-id/wwn-1'/></dataStore></source></disk>`,
			want: []Disk{{ID: "file/srv/a.qcow2"}, {ID: "block/dev/disk/by-id/wwn-1"}}},
		{name: "readonly disk's mirror is not claimed",
			disk: `<disk type='file'><source file='/srv/a.img'/><mirror type='file' job='copy'><source file='/srv/b.img'/></mirror><readonly/></disk>`},
		{name: "vhost-scsi hostdev",
			disk: `<hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' wwpn='naa.5001405DF3E54061'/></hostdev>`,
			want: []Disk{{ID: "vhostscsi/naa.5001405df3e54061", Warning: "a vhost-scsi target is local to this host; the storage behind it is not identified"}}},
		{name: "shareable SCSI hostdev",
			disk: `<hostdev mode='subsystem' type='scsi'><source protocol='iscsi' name='iqn.x:t/1'/><shareable/></hostdev>`},
		{name: "hostile name stays one ID",
			disk: `<disk type='network'><source protocol='gluster' name='../../domains/x%2F'/></disk>`,
			want: []Disk{{ID: "gluster/../../domains/x%2F"}}},

		// not claimed
		{name: "empty cdrom", disk: `<disk type='file' device='cdrom'><target dev='hdc'/><readonly/></disk>`},
		{name: "writable cdrom", disk: `<disk type='file' device='cdrom'><source file='/srv/a.iso'/></disk>`},
		{name: "floppy", disk: `<disk type='file' device='floppy'><source file='/srv/f.img'/></disk>`},
		{name: "readonly", disk: `<disk type='file'><source file='/srv/a.img'/><readonly/></disk>`},
		{name: "shareable", disk: `<disk type='block' device='lun'><source dev='/dev/sdc'/><shareable/></disk>`},
		{name: "no source", disk: `<disk type='block' device='disk'><target dev='vdb'/></disk>`},
		{name: "network without source", disk: `<disk type='network' device='disk'><target dev='vdb'/></disk>`},
		{name: "volume without source", disk: `<disk type='volume' device='disk'><target dev='vdb'/></disk>`},
		{name: "readonly disk with a relative path is not checked",
			disk: `<disk type='file'><source file='a.img'/><readonly/></disk>`},

		// refused
		{name: "relative block path", disk: `<disk type='block'><source dev='sdb'/><target dev='vda'/></disk>`,
			wantErr: `domain XML: disk vda: relative path "sdb" cannot be matched across hosts`},
		{name: "label by position without target", disk: `<disk type='file'><source file='x'/></disk>`,
			wantErr: `domain XML: disk #1: relative path "x"`},
		{name: "fdgroup", disk: `<disk type='file'><source fdgroup='fg0'/><target dev='vda'/></disk>`,
			wantErr: `disk vda: source passed as file descriptors (fdgroup "fg0")`},
		{name: "unknown type without source", disk: `<disk type='teleport'><target dev='vda'/></disk>`,
			wantErr: `disk vda: unsupported disk type`},
		{name: "unknown type with source", disk: `<disk type='teleport'><source x='1'/><target dev='vda'/></disk>`,
			wantErr: `domain XML: `},
		{name: "ctl", disk: `<disk type='ctl'><source dev='/dev/ctl0'/><target dev='vda'/></disk>`,
			wantErr: `disk vda: unsupported disk type`},
		{name: "rbd without pool", disk: `<disk type='network'><source protocol='rbd' name='img'/></disk>`,
			wantErr: `rbd source name "img" is not POOL/IMAGE or POOL/NAMESPACE/IMAGE`},
		{name: "rbd empty part", disk: `<disk type='network'><source protocol='rbd' name='pool//img'/></disk>`,
			wantErr: `rbd source name "pool//img"`},
		{name: "rbd too deep", disk: `<disk type='network'><source protocol='rbd' name='a/b/c/d'/></disk>`,
			wantErr: `rbd source name "a/b/c/d"`},
		{name: "nbd without host", disk: `<disk type='network'><source protocol='nbd' name='e'/></disk>`,
			wantErr: `nbd disk without a <host>`},
		{name: "nbd bad port", disk: `<disk type='network'><source protocol='nbd'><host name='s' port='http'/></source></disk>`,
			wantErr: `nbd port "http" is not a port number`},
		{name: "nbd relative socket", disk: `<disk type='network'><source protocol='nbd'><host transport='unix' socket='nbd.sock'/></source></disk>`,
			wantErr: `nbd socket "nbd.sock" is not an absolute path`},
		{name: "iscsi bad lun", disk: `<disk type='network'><source protocol='iscsi' name='iqn.x:t/one'/></disk>`,
			wantErr: `LUN "one" is not a number`},
		{name: "iscsi without iqn", disk: `<disk type='network'><source protocol='iscsi' name='/1'/></disk>`,
			wantErr: `iscsi source name "/1" is not IQN/LUN`},
		{name: "network without protocol", disk: `<disk type='network'><source name='x'/></disk>`,
			wantErr: `network disk without a protocol`},
		{name: "gluster without name", disk: `<disk type='network'><source protocol='gluster'><host name='g'/></source></disk>`,
			wantErr: `gluster disk without a source name`},
		{name: "volume without volume", disk: `<disk type='volume'><source pool='p'/></disk>`,
			wantErr: `volume source needs both pool and volume`},
		{name: "nvme without address", disk: `<disk type='nvme'><source type='pci' namespace='1'/></disk>`,
			wantErr: `nvme disk with`},
		{name: "nvme not pci", disk: `<disk type='nvme'><target dev='vda'/></disk>`,
			wantErr: `nvme disk without a PCI address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDomain(domainXML(testUUID, "", tt.disk))
			want := Domain{UUID: testUUID, Name: "vm", Mode: ModeOn, Disks: tt.want}
			checkParse(t, got, err, want, tt.wantErr)
		})
	}
}

func TestParseDomainIdentity(t *testing.T) {
	tests := []struct {
		name     string
		xml      string
		wantUUID string
		wantErr  string
	}{
		{name: "canonical", xml: domainWith("vm", testUUID), wantUUID: testUUID},
		{name: "upper case", xml: domainWith("vm", "11111111-2222-4333-8444-5555555555AA"), wantUUID: "11111111-2222-4333-8444-5555555555aa"},
		{name: "no hyphens", xml: domainWith("vm", "1111111122224333844455555555555A"), wantUUID: "11111111-2222-4333-8444-55555555555a"},
		{name: "surrounding space", xml: domainWith("vm", "\n  "+testUUID+"\n"), wantUUID: testUUID},
		{name: "no uuid", xml: `<domain type='kvm'><name>vm</name></domain>`, wantErr: "domain XML: no <uuid>"},
		{name: "misplaced hyphens", xml: domainWith("vm", "1111111-12222-4333-8444-555555555555"), wantErr: "invalid <uuid>"},
		{name: "not hex", xml: domainWith("vm", "g1111111-2222-4333-8444-555555555555"), wantErr: "invalid <uuid>"},
		{name: "too short", xml: domainWith("vm", "1111"), wantErr: `invalid <uuid> "1111"`},
		{name: "no name", xml: domainWith("", testUUID), wantErr: "domain XML: domain " + testUUID + " has no <name>"},
		{name: "not XML", xml: "qemu: not xml", wantErr: "domain XML: stdin holds no XML element"},
		{name: "truncated", xml: "<domain><name>vm</name>\n<uuid>", wantErr: "domain XML: XML syntax error on line 2: unexpected EOF"},
		{name: "other root", xml: "<network><name>n</name></network>", wantErr: "domain XML: expected element type <domain> but have <network>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDomain([]byte(tt.xml))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseDomain: %v", err)
				}
				if got.UUID != tt.wantUUID {
					t.Errorf("UUID = %q, want %q", got.UUID, tt.wantUUID)
				}
				return
			}
			checkParse(t, got, err, Domain{}, tt.wantErr)
		})
	}
}

func domainWith(name, uuid string) string {
	return `<domain type='kvm'><name>` + name + `</name><uuid>` + uuid + `</uuid></domain>`
}

func TestParseDomainMetadata(t *testing.T) {
	tests := []struct {
		name      string
		metadata  string
		wantMode  Mode
		wantHosts []string
		wantErr   string
	}{
		{name: "no metadata", wantMode: ModeOn},
		{name: "empty metadata", metadata: `<metadata/>`, wantMode: ModeOn},
		{name: "element without mode", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1"/></metadata>`, wantMode: ModeOn},
		{name: "on", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="on"/></metadata>`, wantMode: ModeOn},
		{name: "default namespace", metadata: `<metadata><lease xmlns="https://virtlease.dev/xmlns/1" mode="ha"/></metadata>`, wantMode: ModeHA},
		{name: "namespace on metadata", metadata: `<metadata xmlns:v="https://virtlease.dev/xmlns/1"><v:lease mode="off"/></metadata>`, wantMode: ModeOff},
		{name: "prefixed attribute", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" vl:mode="ha"/></metadata>`, wantMode: ModeHA},
		{name: "element with content", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="ha"><note>x</note></vl:lease></metadata>`, wantMode: ModeHA},
		{name: "hosts only blanks", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" hosts=" , ,"/></metadata>`, wantMode: ModeOn},
		{name: "hosts", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="ha" hosts="a"/></metadata>`, wantMode: ModeHA, wantHosts: []string{"a"}},
		{name: "unbound prefix is not ours", metadata: `<metadata><vl:lease mode="bogus"/></metadata>`, wantMode: ModeOn},
		{name: "nested deeper is not ours", metadata: `<metadata><x><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="bogus"/></x></metadata>`, wantMode: ModeOn},
		{name: "outside metadata is not ours", metadata: `<description><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="bogus"/></description>`, wantMode: ModeOn},
		{name: "empty mode", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode=""/></metadata>`,
			wantErr: `domain XML: unknown virtlease mode "" in <metadata> (want on, ha or off)`},
		{name: "mode is case-sensitive", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="HA"/></metadata>`,
			wantErr: `unknown virtlease mode "HA"`},
		{name: "two lease elements", metadata: `<metadata><a:lease xmlns:a="https://virtlease.dev/xmlns/1" mode="off"/><b:lease xmlns:b="https://virtlease.dev/xmlns/1" mode="on"/></metadata>`,
			wantErr: `domain XML: more than one <lease xmlns="https://virtlease.dev/xmlns/1"> in <metadata>`},
		{name: "mode given twice", metadata: `<metadata><vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="on" vl:mode="off"/></metadata>`,
			wantErr: `domain XML: virtlease <lease> in <metadata> gives mode more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDomain(domainXML(testUUID, tt.metadata, ""))
			want := Domain{UUID: testUUID, Name: "vm", Mode: tt.wantMode, Hosts: tt.wantHosts}
			checkParse(t, got, err, want, tt.wantErr)
		})
	}
}

func TestIsKernelDevName(t *testing.T) {
	tests := map[string]bool{
		"/dev/sda":            true,
		"/dev/sdb1":           true,
		"/dev/sdaa":           true,
		"/dev/vdc":            true,
		"/dev/xvda2":          true,
		"/dev/hdc":            true,
		"/dev/nvme0n1":        true,
		"/dev/nvme12n3p4":     true,
		"/dev/dm-3":           true,
		"/dev/md127":          true,
		"/dev/loop0":          true,
		"/dev/nbd0p1":         true,
		"/dev/rbd0":           true,
		"/dev/zd16":           true,
		"/dev/mmcblk0p1":      true,
		"/dev/mapper/mpatha":  true,
		"/dev/mapper/mpathb2": true,
		"/dev//sdb":           true,

		"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4":        false,
		"/dev/disk/by-uuid/1b2c":                        false,
		"/dev/mapper/3600a098038304437415d4b6a59684a53": false,
		"/dev/vg0/lv0":      false,
		"/dev/md/raid":      false,
		"/dev/rbd/pool/img": false,
		"/dev/drbd0":        false,
		"/dev/nvme0":        false,
		"/dev/sd":           false,
		"/dev/sd1":          false,
		"/dev/dm-":          false,
		"/srv/sda":          false,
		"/dev/mapper/mpath": false,
	}
	for path, want := range tests {
		if got := isKernelDevName(path); got != want {
			t.Errorf("isKernelDevName(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestDiskIDs(t *testing.T) {
	d := Domain{Disks: []Disk{{ID: "rbd/p/a", Target: "vda"}, {ID: "file/srv/b", Warning: "w"}}}
	if got, want := d.DiskIDs(), []string{"rbd/p/a", "file/srv/b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DiskIDs() = %q, want %q", got, want)
	}
	if got := (Domain{}).DiskIDs(); len(got) != 0 {
		t.Errorf("DiskIDs() of no disks = %q, want none", got)
	}
}

// checkKeys is the property the lease layout relies on: whatever the XML
// says, a disk or domain key is one segment under its directory.
func checkKeys(t *testing.T, d Domain) {
	t.Helper()
	keys := lease.NewKeys("/virtlease")
	for _, id := range d.DiskIDs() {
		checkOneSegment(t, keys.Disk(id), "/virtlease/disks/")
		if got := keys.Name(keys.Disk(id)); got != id {
			t.Errorf("Name(Disk(%q)) = %q", id, got)
		}
	}
	checkOneSegment(t, keys.Domain(d.UUID), "/virtlease/domains/")
}

func checkOneSegment(t *testing.T, key, dir string) {
	t.Helper()
	rest, ok := strings.CutPrefix(key, dir)
	if !ok || rest == "" || strings.Contains(rest, "/") {
		t.Errorf("key %q is not one segment under %s", key, dir)
	}
}

func FuzzParseDomain(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(domainsDir, "*.xml"))
	if err != nil {
		f.Fatal(err)
	}
	if len(files) == 0 {
		f.Fatal("no seed fixtures in " + domainsDir)
	}
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(text)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		d, err := ParseDomain(text)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			return
		}
		if _, ok := canonicalUUID(d.UUID); !ok || strings.ToLower(d.UUID) != d.UUID || len(d.UUID) != 36 {
			t.Errorf("UUID %q is not canonical", d.UUID)
		}
		switch d.Mode {
		case ModeOn, ModeHA, ModeOff:
		default:
			t.Errorf("Mode = %q", d.Mode)
		}
		seen := make(map[string]bool)
		for _, disk := range d.Disks {
			if disk.ID == "" || seen[disk.ID] {
				t.Errorf("disk ID %q empty or repeated", disk.ID)
			}
			seen[disk.ID] = true
		}
		checkKeys(t, d)
	})
}

// "/mnt/link/../img" is the image next to link's target, as the kernel
// resolves it, not "/mnt/img" as a lexical clean has it; without a
// symbolic link before the "..", the lexical ID stands.
func TestPathDotDotThroughSymlink(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"mnt", "other/deep"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "other", "deep"), filepath.Join(root, "mnt", "link")); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{root + "/mnt/link/../img", "file" + real + "/other/img"},
		{root + "/mnt/link/./x/../../img", "file" + real + "/other/img"},
		{root + "/mnt/plain/../img", "file" + root + "/mnt/img"},  // no link: lexical
		{root + "/mnt/link/img", "file" + root + "/mnt/link/img"}, // links kept without ".."
	} {
		got, err := ParseDomain(domainXML(testUUID, "", `<disk type='file'><source file='`+tc.path+`'/></disk>`))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Disks) != 1 || got.Disks[0].ID != tc.want {
			t.Errorf("%s: got %+v, want ID %s", tc.path, got.Disks, tc.want)
		}
	}
}
