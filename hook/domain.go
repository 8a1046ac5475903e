// This file and args.go are the hook's pure part: they turn libvirt's
// arguments and XML into what the lease protocol needs, with no I/O but
// resolving a path's ".." through a symbolic link (resolveDotDot), so that
// every rule about which disks are claimed and how they are named is tested
// by tables. (The package doc lives in hook.go.)

package hook

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// Namespace is the XML namespace of virtlease's element in a domain's
// <metadata>. Only the URI matters; the prefix is whatever the XML uses.
const Namespace = "https://virtlease.dev/xmlns/1"

// DefaultNBDPort is the port an nbd disk uses when its <host> names none; it
// is written into the disk ID so that "srv" and "srv:10809" are one disk.
const DefaultNBDPort = "10809"

// Mode is how virtlease treats a domain, from <vl:lease mode="…"/>.
type Mode string

const (
	// ModeOn protects the domain: its domain key and disks are claimed
	// before it starts. It is the mode of a domain with no metadata.
	ModeOn Mode = "on"
	// ModeHA protects the domain as ModeOn does, and the watchdogs restart
	// it on another host when its host is lost.
	ModeHA Mode = "ha"
	// ModeOff claims nothing, but a start is still refused over another
	// host's live claim.
	ModeOff Mode = "off"
)

// Domain is what virtlease needs from a libvirt domain XML.
type Domain struct {
	// UUID is the domain's identity in every key, in the canonical
	// lower-case 8-4-4-4-12 form whatever form the XML used.
	UUID string
	// Name is for messages only: names differ between hosts and change.
	Name string
	// Mode comes from <metadata><vl:lease mode="…"/></metadata>, matched
	// by Namespace; no element or no mode attribute means ModeOn.
	Mode Mode
	// Hosts is the lease element's hosts="a,b" attribute, entries trimmed
	// and empty ones dropped; nil when the attribute is absent or empty.
	Hosts []string
	// Disks are the disks this domain can write, deduplicated by ID, in
	// XML order. See ParseDomain for which disks count and their IDs.
	Disks []Disk
}

// Disk is one disk a domain can write.
type Disk struct {
	// ID names the storage the same way on every host that names it the
	// same way (see ParseDomain). It is not escaped: lease.Keys.Disk does
	// that, so the ID stays readable in messages.
	ID string
	// Target is the guest device (<target dev="vda"/>), for messages; it
	// may be empty.
	Target string
	// Warning, when not empty, says why the ID may not match the same
	// storage on another host (a kernel device name such as /dev/sdb, a
	// local socket), so that the operator learns the claim may not
	// protect anything.
	Warning string
}

// DiskIDs returns the IDs of d's disks in order.
func (d Domain) DiskIDs() []string {
	ids := make([]string, 0, len(d.Disks))
	for _, disk := range d.Disks {
		ids = append(ids, disk.ID)
	}
	return ids
}

// ParseDomain reads a libvirt domain XML as libvirt hands it to the hook.
//
// A disk is claimed when its device is "disk" (also when the attribute is
// absent) or "lun", and it is neither <readonly/> nor <shareable/>. CD-ROMs,
// floppies, disks with no source (no medium) and every image of a
// <backingStore> chain are never claimed: only the top image is written.
// With the top image, a claimed disk's qcow2 data file (<dataStore>) and
// the destination of a block copy or active commit (<mirror>) are claimed
// too, and so is a writable SCSI <hostdev> (see parseHostdev).
// The ID of a claimed disk is, by <disk type=…>:
//
//	network rbd     rbd/POOL/IMAGE or rbd/POOL/NAMESPACE/IMAGE, from the source
//	                name "POOL/IMAGE" or "POOL/NAMESPACE/IMAGE" (libvirt has no
//	                separate namespace attribute); monitors are not part of it
//	network nbd     nbd/HOST:PORT/EXPORT from the first <host>, PORT 10809 when
//	                absent, HOST lower-cased without a trailing dot, or an IP
//	                address in canonical form (IPv6 in brackets), EXPORT
//	                possibly empty;
//	                nbd/unix:SOCKET/EXPORT for a unix socket (warned: host-local)
//	network iscsi   iscsi/IQN/LUN from the source name "IQN/LUN" or "IQN",
//	                IQN lower-cased, LUN in decimal, 0 when absent
//	network other   PROTOCOL/NAME (gluster/VOLUME/PATH, http/PATH, …), one
//	                leading "/" of NAME dropped; hosts are not part of it
//	file            file + the cleaned absolute path (file/var/lib/vm1.qcow2),
//	                a ".." after a symbolic link resolved (resolveDotDot)
//	block           block + the cleaned absolute path; warned when it is a
//	                kernel name (/dev/sdb, /dev/vda, /dev/nvme0n1, /dev/dm-3, …)
//	dir             dir + the cleaned absolute path
//	volume          volume/POOL/VOLUME
//	nvme            nvme/DDDD:BB:SS.F/NAMESPACE (warned: host-local)
//	vhostuser       vhostuser + the socket path (warned: host-local)
//	vhostvdpa       vhostvdpa + the device path (warned: host-local)
//
// Paths keep their case, and symbolic links are not resolved but before a
// ".." (other links would resolve differently on other hosts): two hosts
// share a claim only when their XMLs name the storage the same way. An ID
// already in canonical form keeps its spelling across versions (the tests
// pin them): a running guest's keys must keep their names on an upgrade.
//
// ParseDomain returns an error, phrased for an operator, when the XML is
// malformed, the UUID or name is missing or the UUID is invalid, the
// virtlease metadata is ambiguous or names an unknown mode, or a claimed
// disk cannot be named the same way on every host (a relative path, a
// source passed as a file descriptor, an unknown disk type). A start must
// then be refused: a disk that cannot be named cannot be protected.
func ParseDomain(xmlText []byte) (Domain, error) {
	if len(bytes.TrimSpace(xmlText)) == 0 {
		return Domain{}, errors.New("domain XML: stdin is empty (libvirt passes the domain XML there)")
	}
	var x libvirtxml.Domain
	if err := xml.Unmarshal(xmlText, &x); err != nil {
		if errors.Is(err, io.EOF) {
			return Domain{}, errors.New("domain XML: stdin holds no XML element (is it a libvirt domain XML?)")
		}
		return Domain{}, fmt.Errorf("domain XML: %v", oneLine(err.Error()))
	}
	uuid, ok := canonicalUUID(x.UUID)
	if !ok {
		if strings.TrimSpace(x.UUID) == "" {
			return Domain{}, errors.New("domain XML: no <uuid>")
		}
		return Domain{}, fmt.Errorf("domain XML: invalid <uuid> %q", x.UUID)
	}
	d := Domain{UUID: uuid, Name: x.Name}
	if d.Name == "" {
		return Domain{}, fmt.Errorf("domain XML: domain %s has no <name>", uuid)
	}
	var err error
	d.Mode, d.Hosts, err = parseLease(xmlText)
	if err != nil {
		return Domain{}, fmt.Errorf("domain XML: %w", err)
	}
	if x.Devices == nil {
		return d, nil
	}
	seen := make(map[string]bool)
	add := func(disks []Disk) {
		for _, disk := range disks {
			if !seen[disk.ID] {
				seen[disk.ID] = true
				d.Disks = append(d.Disks, disk)
			}
		}
	}
	for i := range x.Devices.Disks {
		disks, err := parseDisk(&x.Devices.Disks[i])
		if err != nil {
			return Domain{}, fmt.Errorf("domain XML: disk %s: %w", diskLabel(&x.Devices.Disks[i], i), err)
		}
		add(disks)
	}
	for i := range x.Devices.Hostdevs {
		disk, ok, err := parseHostdev(&x.Devices.Hostdevs[i])
		if err != nil {
			return Domain{}, fmt.Errorf("domain XML: hostdev #%d: %w", i+1, err)
		}
		if ok {
			add([]Disk{disk})
		}
	}
	return d, nil
}

// oneLine keeps an error on one line: the hook's message ends up in a
// single line of virsh's output and of libvirtd's log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func diskLabel(x *libvirtxml.DomainDisk, i int) string {
	if x.Target != nil && x.Target.Dev != "" {
		return x.Target.Dev
	}
	return "#" + strconv.Itoa(i+1)
}

// canonicalUUID accepts what libvirt writes (8-4-4-4-12) and the bare 32
// hex digits libvirt also accepts on input, in either case, and returns the
// one form used in keys, so that a hand-written XML and libvirt's own output
// name the same domain.
func canonicalUUID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	switch len(s) {
	case 36:
		for _, i := range []int{8, 13, 18, 23} {
			if s[i] != '-' {
				return "", false
			}
		}
		s = strings.ReplaceAll(s, "-", "")
	case 32:
	default:
		return "", false
	}
	if len(s) != 32 {
		return "", false
	}
	b := []byte(strings.ToLower(s))
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return fmt.Sprintf("%s-%s-%s-%s-%s", b[0:8], b[8:12], b[12:16], b[16:20], b[20:32]), true
}

// parseLease finds <lease> in Namespace among the children of <metadata>.
//
// It reads the whole document rather than libvirtxml's Metadata.XML:
// that is the inner XML of <metadata> as raw text, so a prefix declared on
// <domain> or <metadata> would no longer resolve to its namespace there.
func parseLease(xmlText []byte) (Mode, []string, error) {
	dec := xml.NewDecoder(bytes.NewReader(xmlText))
	var (
		depth  int
		inMeta bool
		lease  *xml.StartElement
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, errors.New(oneLine(err.Error()))
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			// libvirtxml matches <metadata> by local name only; so do we,
			// so that both passes agree on which element it is.
			if depth == 2 && t.Name.Local == "metadata" {
				inMeta = true
			}
			if depth == 3 && inMeta && t.Name.Space == Namespace && t.Name.Local == "lease" {
				if lease != nil {
					return "", nil, fmt.Errorf("more than one <lease xmlns=%q> in <metadata>", Namespace)
				}
				c := t.Copy()
				lease = &c
			}
		case xml.EndElement:
			if depth == 2 {
				inMeta = false
			}
			depth--
		}
	}
	if lease == nil {
		return ModeOn, nil, nil
	}
	mode, modeSet, err := leaseAttr(lease, "mode")
	if err != nil {
		return "", nil, err
	}
	hosts, _, err := leaseAttr(lease, "hosts")
	if err != nil {
		return "", nil, err
	}
	m := ModeOn
	if modeSet {
		switch Mode(mode) {
		case ModeOn, ModeHA, ModeOff:
			m = Mode(mode)
		default:
			return "", nil, fmt.Errorf("unknown virtlease mode %q in <metadata> (want on, ha or off)", mode)
		}
	}
	return m, splitHosts(hosts), nil
}

// leaseAttr also accepts the attribute with the element's own prefix
// (vl:mode), which people write by analogy; giving it both ways is an error
// rather than a guess.
func leaseAttr(e *xml.StartElement, name string) (string, bool, error) {
	var (
		value string
		found bool
	)
	for _, a := range e.Attr {
		if a.Name.Local != name || (a.Name.Space != "" && a.Name.Space != Namespace) {
			continue
		}
		if found {
			return "", false, fmt.Errorf("virtlease <lease> in <metadata> gives %s more than once", name)
		}
		value, found = a.Value, true
	}
	return value, found, nil
}

func splitHosts(s string) []string {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// parseDisk returns what a <disk> lets the domain write: its source, a
// qcow2 external data file (<dataStore>), and the destination of a block
// copy or active commit in progress (<mirror>, in a running domain's XML).
// Nothing for a disk that is not claimed.
func parseDisk(x *libvirtxml.DomainDisk) ([]Disk, error) {
	switch x.Device {
	case "", "disk", "lun":
	default:
		return nil, nil
	}
	if x.ReadOnly != nil || x.Shareable != nil {
		return nil, nil
	}
	target := ""
	if x.Target != nil {
		target = x.Target.Dev
	}
	// libvirtxml allocates a Source for every disk, <source> or not, so
	// "no medium" shows as a source whose fields are all empty.
	var disks []Disk
	for _, src := range []*libvirtxml.DomainDiskSource{x.Source, dataStore(x.Source), mirror(x)} {
		if src == nil {
			continue
		}
		id, warning, err := sourceID(src)
		if err != nil {
			return nil, err
		}
		if id != "" {
			disks = append(disks, Disk{ID: id, Target: target, Warning: warning})
		}
	}
	return disks, nil
}

func dataStore(src *libvirtxml.DomainDiskSource) *libvirtxml.DomainDiskSource {
	if src == nil || src.DataStore == nil {
		return nil
	}
	return src.DataStore.Source
}

func mirror(x *libvirtxml.DomainDisk) *libvirtxml.DomainDiskSource {
	if x.Mirror == nil {
		return nil
	}
	return x.Mirror.Source
}

// sourceID names one disk source; "" for no medium.
func sourceID(src *libvirtxml.DomainDiskSource) (id, warning string, err error) {
	switch {
	case src.File != nil:
		if src.File.File == "" && src.File.FDGroup != "" {
			return "", "", fmt.Errorf("source passed as file descriptors (fdgroup %q) cannot be identified on other hosts; mark the disk <readonly/> or <shareable/>", src.File.FDGroup)
		}
		id, err = pathID("file", src.File.File)
	case src.Block != nil:
		id, err = pathID("block", src.Block.Dev)
		if id != "" && isKernelDevName(src.Block.Dev) {
			warning = fmt.Sprintf("%s is a kernel device name that can differ between hosts; name it by /dev/disk/by-id/… so the claim protects the same disk everywhere", src.Block.Dev)
		}
	case src.Dir != nil:
		id, err = pathID("dir", src.Dir.Dir)
	case src.Network != nil:
		id, warning, err = networkID(src.Network)
	case src.Volume != nil:
		id, err = volumeID(src.Volume)
	case src.NVME != nil:
		id, err = nvmeID(src.NVME)
		warning = "an NVMe PCI address names a device of this host only"
	case src.VHostUser != nil:
		if src.VHostUser.UNIX == nil {
			return "", "", errors.New("vhost-user disk without a unix socket is not supported")
		}
		id, err = pathID("vhostuser", src.VHostUser.UNIX.Path)
		warning = "a vhost-user socket is local to this host; the storage behind it is not identified"
	case src.VHostVDPA != nil:
		id, err = pathID("vhostvdpa", src.VHostVDPA.Dev)
		warning = "a vDPA device is local to this host; the storage behind it is not identified"
	default:
		return "", "", errors.New("unsupported disk type: virtlease cannot identify it on other hosts; mark the disk <readonly/> or <shareable/>")
	}
	if err != nil {
		return "", "", err
	}
	return id, warning, nil
}

// parseHostdev claims a SCSI <hostdev> the guest can write: a LUN passed
// through is a disk. An iSCSI LUN gets the ID an iSCSI <disk> of that LUN
// gets; a LUN of a host adapter is named by adapter and address, which
// only this host understands (warned, like /dev/sdX). A vhost-scsi target
// (scsi_host) is named by its WWPN, local to this host (warned). Other
// host devices (PCI, USB, mediated) are not storage virtlease can name.
func parseHostdev(x *libvirtxml.DomainHostdev) (Disk, bool, error) {
	switch {
	case x.SubsysSCSI != nil:
		h := x.SubsysSCSI
		if h.ReadOnly != nil || h.Shareable != nil {
			return Disk{}, false, nil
		}
		switch {
		case h.Source != nil && h.Source.ISCSI != nil:
			id, err := iscsiID(h.Source.ISCSI.Name)
			return Disk{ID: id}, err == nil, err
		case h.Source != nil && h.Source.Host != nil && h.Source.Host.Adapter != nil && h.Source.Host.Address != nil:
			a := h.Source.Host.Address
			if a.Bus == nil || a.Target == nil || a.Unit == nil || h.Source.Host.Adapter.Name == "" {
				return Disk{}, false, errors.New("SCSI hostdev with an incomplete adapter or address")
			}
			return Disk{ID: fmt.Sprintf("scsihost/%s/%d:%d:%d", h.Source.Host.Adapter.Name, *a.Bus, *a.Target, *a.Unit),
				Warning: "a SCSI host adapter address names a LUN of this host only; the LUN behind it is not identified"}, true, nil
		}
		return Disk{}, false, errors.New("SCSI hostdev without an iSCSI or host adapter source: virtlease cannot identify it on other hosts; mark it <readonly/> or <shareable/>")
	case x.SubsysSCSIHost != nil:
		if x.SubsysSCSIHost.Source == nil || x.SubsysSCSIHost.Source.WWPN == "" {
			return Disk{}, false, errors.New("vhost-scsi hostdev without a wwpn")
		}
		return Disk{ID: "vhostscsi/" + strings.ToLower(x.SubsysSCSIHost.Source.WWPN),
			Warning: "a vhost-scsi target is local to this host; the storage behind it is not identified"}, true, nil
	}
	return Disk{}, false, nil
}

// pathID returns "" for an empty path (no medium). A relative path is an
// error: it resolves against libvirtd's working directory, which says
// nothing about what other hosts see.
func pathID(kind, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("relative path %q cannot be matched across hosts; use an absolute path", path)
	}
	return kind + resolveDotDot(path), nil
}

// resolveDotDot cleans an absolute path, resolving each ".." as the kernel
// does: against the directory its prefix really names. When that prefix
// goes through a symbolic link on this host, /mnt/link/../img is the image
// in link's target's parent, not /mnt/img as filepath.Clean has it. Only a
// prefix followed by ".." is resolved (when it exists here); every other
// symbolic link stays as written, so a path without ".." has the ID every
// host computes from the same spelling.
func resolveDotDot(path string) string {
	parts := strings.Split(path, "/")
	if !slices.Contains(parts, "..") {
		return filepath.Clean(path)
	}
	cur := "/"
	for _, part := range parts {
		switch part {
		case "", ".":
		case "..":
			if real, err := filepath.EvalSymlinks(cur); err == nil {
				cur = real
			}
			cur = filepath.Dir(cur)
		default:
			cur = filepath.Join(cur, part)
		}
	}
	return cur
}

// isKernelDevName reports whether a /dev path is a name the kernel hands
// out in discovery order, which differs between hosts and across reboots.
// Names set up by configuration (/dev/VG/LV, /dev/mapper/WWID, /dev/drbdN,
// /dev/rbd/POOL/IMAGE, /dev/disk/by-*) are not.
func isKernelDevName(path string) bool {
	path = filepath.Clean(path)
	if rest, ok := strings.CutPrefix(path, "/dev/mapper/mpath"); ok {
		// multipathd's user_friendly_names: mpatha on one host may be
		// mpathc on another.
		return isLower(strings.TrimRight(rest, "0123456789"))
	}
	name, ok := strings.CutPrefix(path, "/dev/")
	if !ok || strings.Contains(name, "/") {
		return false
	}
	// sda, sda1, vdb, xvda2, hdc: letters then an optional partition number.
	for _, p := range []string{"sd", "vd", "xvd", "hd"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			letters := strings.TrimRight(rest, "0123456789")
			return letters != "" && isLower(letters)
		}
	}
	// nvme0n1, nvme0n1p2.
	if rest, ok := strings.CutPrefix(name, "nvme"); ok {
		ctrl, ns, ok := strings.Cut(rest, "n")
		if !ok || !isDigits(ctrl) {
			return false
		}
		ns, part, hasPart := strings.Cut(ns, "p")
		return isDigits(ns) && (!hasPart || isDigits(part))
	}
	// dm-3, md0, loop1, nbd0, rbd0, sr0, zd16, mmcblk0 (and partitions
	// such as md0p1, mmcblk0p1, zd16p1).
	for _, p := range []string{"dm-", "md", "loop", "nbd", "rbd", "sr", "zd", "mmcblk"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			num, part, hasPart := strings.Cut(rest, "p")
			return isDigits(num) && (!hasPart || isDigits(part))
		}
	}
	return false
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func isLower(s string) bool {
	for _, c := range s {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}

func networkID(n *libvirtxml.DomainDiskSourceNetwork) (id, warning string, err error) {
	if n.Protocol == "" && n.Name == "" && len(n.Hosts) == 0 {
		return "", "", nil
	}
	switch n.Protocol {
	case "":
		return "", "", errors.New("network disk without a protocol")
	case "rbd":
		id, err = rbdID(n.Name)
	case "nbd":
		id, warning, err = nbdID(n)
	case "iscsi":
		id, err = iscsiID(n.Name)
	default:
		name := strings.TrimPrefix(n.Name, "/")
		if name == "" {
			return "", "", fmt.Errorf("%s disk without a source name", n.Protocol)
		}
		id = n.Protocol + "/" + name
	}
	return id, warning, err
}

func rbdID(name string) (string, error) {
	parts := strings.Split(name, "/")
	if len(parts) < 2 || len(parts) > 3 || slicesContainEmpty(parts) {
		return "", fmt.Errorf("rbd source name %q is not POOL/IMAGE or POOL/NAMESPACE/IMAGE", name)
	}
	return "rbd/" + name, nil
}

func slicesContainEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" {
			return true
		}
	}
	return false
}

func nbdID(n *libvirtxml.DomainDiskSourceNetwork) (id, warning string, err error) {
	if len(n.Hosts) == 0 {
		return "", "", errors.New("nbd disk without a <host>")
	}
	// Only the first host: libvirt and QEMU connect to it alone.
	h := n.Hosts[0]
	if h.Transport == "unix" {
		if !filepath.IsAbs(h.Socket) {
			return "", "", fmt.Errorf("nbd socket %q is not an absolute path", h.Socket)
		}
		return "nbd/unix:" + filepath.Clean(h.Socket) + "/" + n.Name,
			"an nbd unix socket is local to this host; the export behind it is not identified", nil
	}
	if h.Name == "" {
		return "", "", errors.New("nbd <host> without a name")
	}
	port := h.Port
	if port == "" {
		port = DefaultNBDPort
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", "", fmt.Errorf("nbd port %q is not a port number", h.Port)
	}
	// Through ParseUint so that "010809" and "10809" are one disk.
	hostPort := net.JoinHostPort(canonicalHost(h.Name), strconv.FormatUint(p, 10))
	return "nbd/" + hostPort + "/" + n.Name, "", nil
}

// canonicalHost is one spelling per host name: an IP address in its
// canonical form (fd00:0::1 and FD00::1 are fd00::1, an IPv4-mapped IPv6
// address is the IPv4 address), a DNS name in lower case without a
// trailing dot. Names already in that form keep their spelling. Aliases
// (two names, or a name and its address) stay different IDs.
func canonicalHost(name string) string {
	name = strings.Trim(name, "[]")
	if a, err := netip.ParseAddr(name); err == nil {
		return a.Unmap().String()
	}
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// iscsiID names an iSCSI LUN. IQNs (and eui./naa. names) are
// case-insensitive (RFC 3720): lower-cased, so that two spellings of one
// target are one disk.
func iscsiID(name string) (string, error) {
	iqn, lun, hasLUN := strings.Cut(name, "/")
	if iqn == "" {
		return "", fmt.Errorf("iscsi source name %q is not IQN/LUN", name)
	}
	n := uint64(0)
	if hasLUN {
		var err error
		if n, err = strconv.ParseUint(lun, 10, 32); err != nil {
			return "", fmt.Errorf("iscsi source name %q: LUN %q is not a number", name, lun)
		}
	}
	return "iscsi/" + strings.ToLower(iqn) + "/" + strconv.FormatUint(n, 10), nil
}

func volumeID(v *libvirtxml.DomainDiskSourceVolume) (string, error) {
	if v.Pool == "" && v.Volume == "" {
		return "", nil
	}
	if v.Pool == "" || v.Volume == "" {
		return "", fmt.Errorf("volume source needs both pool and volume (have pool %q, volume %q)", v.Pool, v.Volume)
	}
	return "volume/" + v.Pool + "/" + v.Volume, nil
}

func nvmeID(n *libvirtxml.DomainDiskSourceNVME) (string, error) {
	if n.PCI == nil || n.PCI.Address == nil {
		return "", errors.New("nvme disk without a PCI address is not supported")
	}
	a := n.PCI.Address
	if a.Domain == nil || a.Bus == nil || a.Slot == nil || a.Function == nil {
		return "", errors.New("nvme disk with an incomplete PCI address")
	}
	return fmt.Sprintf("nvme/%04x:%02x:%02x.%x/%d", *a.Domain, *a.Bus, *a.Slot, *a.Function, n.PCI.Namespace), nil
}
