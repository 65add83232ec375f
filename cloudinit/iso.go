package cloudinit

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"unicode/utf16"

	"hearth.dev/hearth/atomicfile"
)

// WriteISO writes the seed to path as an ISO9660 image with volume label
// "cidata" holding user-data, meta-data and, when set, network-config. The
// file is replaced atomically and readable by its owner only (user-data
// may hold secrets), and the same seed always gives the same bytes, so a
// caller can compare before it replaces a VM's seed.
func (s Seed) WriteISO(path string) error {
	files := []isoFile{
		{name: "meta-data", data: s.MetaData()},
		{name: "user-data", data: s.UserDataBytes()},
	}
	if s.NetworkConfig != "" {
		files = append(files, isoFile{name: "network-config", data: []byte(s.NetworkConfig)})
	}
	img, err := buildISO("cidata", files)
	if err != nil {
		return fmt.Errorf("build seed image %s: %w", path, err)
	}
	if err := atomicfile.Write(path, img, 0o600); err != nil {
		return fmt.Errorf("write seed image: %w", err)
	}
	return nil
}

// The ISO9660 writer below does the small subset a seed needs: one root
// directory of a few regular files. Plain ISO9660 names are upper-case 8.3
// ("USER_DAT.;1"), so every file also carries its real name twice, as Linux
// and cloud-init expect to see it: in Rock Ridge NM entries (what Linux
// prefers) and in a Joliet tree (what Windows and BSD guests read). The
// layout follows genisoimage -J -R, which cloud-localds uses:
//
//	0-15   system area (zeros)
//	16     primary volume descriptor
//	17     Joliet supplementary volume descriptor
//	18     volume descriptor set terminator
//	19-22  path tables: primary L and M, Joliet L and M
//	23     Rock Ridge continuation area holding the ER entry
//	24…    primary root directory, Joliet root directory, file data

const sectorSize = 2048

type isoFile struct {
	name string
	data []byte
}

// epoch is every timestamp in the image: a fixed one keeps images
// reproducible.
var epoch = [7]byte{70, 1, 1, 0, 0, 0, 0} // 1970-01-01 00:00:00 UTC

const epochDigits = "1970010100000000"

const (
	sectorPrimaryVD = 16
	sectorJolietVD  = 17
	sectorTerminate = 18
	sectorPathL     = 19
	sectorPathM     = 20
	sectorJPathL    = 21
	sectorJPathM    = 22
	sectorContinue  = 23
	sectorFirstDir  = 24
)

// Rock Ridge's extension reference, as every RRIP 1.09 writer spells it.
const (
	rrID     = "RRIP_1991A"
	rrDesc   = "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
	rrSource = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION."
)

// dirRecord is one directory record before extents are known.
type dirRecord struct {
	ident  []byte // file identifier as stored
	dir    bool
	file   int    // index into files; -1 for the directory itself or its parent
	system []byte // system use area (Rock Ridge entries)
}

func buildISO(volumeID string, files []isoFile) ([]byte, error) {
	if len(volumeID) > 16 {
		return nil, fmt.Errorf("volume id %q is longer than 16 characters", volumeID)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if f.name == "" || strings.ContainsAny(f.name, "/\x00") || len(f.name) > 64 {
			return nil, fmt.Errorf("file name %q: want 1 to 64 characters without / or NUL", f.name)
		}
		if seen[f.name] {
			return nil, fmt.Errorf("file name %q given twice", f.name)
		}
		seen[f.name] = true
	}

	primary := primaryRecords(files)
	joliet := jolietRecords(files)
	primarySectors := dirSectors(primary)
	jolietSectors := dirSectors(joliet)
	primaryDir := uint32(sectorFirstDir)
	jolietDir := primaryDir + primarySectors
	next := jolietDir + jolietSectors
	extents := make([]uint32, len(files))
	for i, f := range files {
		extents[i] = next
		next += sectors(len(f.data))
	}
	total := next

	img := make([]byte, int(total)*sectorSize)
	sector := func(n uint32) []byte { return img[int(n)*sectorSize : int(n+1)*sectorSize] }

	primaryRoot := encodeRecord(dirRecord{ident: []byte{0}, dir: true, file: -1}, primaryDir, primarySectors*sectorSize)
	jolietRoot := encodeRecord(dirRecord{ident: []byte{0}, dir: true, file: -1}, jolietDir, jolietSectors*sectorSize)
	writeVolumeDescriptor(sector(sectorPrimaryVD), 1, volumeID, total, primaryRoot, sectorPathL, sectorPathM)
	writeVolumeDescriptor(sector(sectorJolietVD), 2, volumeID, total, jolietRoot, sectorJPathL, sectorJPathM)
	term := sector(sectorTerminate)
	term[0] = 255
	copy(term[1:], "CD001")
	term[6] = 1

	writePathTable(sector(sectorPathL), binary.LittleEndian, primaryDir)
	writePathTable(sector(sectorPathM), binary.BigEndian, primaryDir)
	writePathTable(sector(sectorJPathL), binary.LittleEndian, jolietDir)
	writePathTable(sector(sectorJPathM), binary.BigEndian, jolietDir)

	copy(sector(sectorContinue), erEntry())

	writeDir(img, primaryDir, primarySectors, primary, extents, files)
	writeDir(img, jolietDir, jolietSectors, joliet, extents, files)
	for i, f := range files {
		copy(img[int(extents[i])*sectorSize:], f.data)
	}
	return img, nil
}

func sectors(n int) uint32 {
	return uint32((n + sectorSize - 1) / sectorSize)
}

// primaryRecords returns the primary root directory: "." (which opens the
// Rock Ridge area with SP and points at the ER entry with CE), ".." and the
// files sorted by their ISO9660 names, as the standard requires.
func primaryRecords(files []isoFile) []dirRecord {
	dirPX := px(0o40555, 2)
	self := susp("SP", []byte{0xBE, 0xEF, 0})
	self = append(self, susp("RR", []byte{0x81})...)
	self = append(self, dirPX...)
	self = append(self, tf()...)
	ce := make([]byte, 24)
	both32(ce[0:], sectorContinue)
	both32(ce[8:], 0)
	both32(ce[16:], uint32(len(erEntry())))
	self = append(self, susp("CE", ce)...)
	parent := append(susp("RR", []byte{0x81}), dirPX...)
	parent = append(parent, tf()...)

	recs := []dirRecord{
		{ident: []byte{0}, dir: true, file: -1, system: self},
		{ident: []byte{1}, dir: true, file: -1, system: parent},
	}
	names := isoNames(files)
	var entries []dirRecord
	for i, f := range files {
		su := susp("RR", []byte{0x89})
		su = append(su, susp("NM", append([]byte{0}, f.name...))...)
		su = append(su, px(0o100444, 1)...)
		su = append(su, tf()...)
		entries = append(entries, dirRecord{ident: []byte(names[i]), file: i, system: su})
	}
	sort.Slice(entries, func(a, b int) bool { return bytes.Compare(entries[a].ident, entries[b].ident) < 0 })
	return append(recs, entries...)
}

// jolietRecords returns the Joliet root directory: the real names in UCS-2,
// big-endian, without the ";1" version that Linux would strip anyway
// (genisoimage leaves it out too).
func jolietRecords(files []isoFile) []dirRecord {
	recs := []dirRecord{
		{ident: []byte{0}, dir: true, file: -1},
		{ident: []byte{1}, dir: true, file: -1},
	}
	var entries []dirRecord
	for i, f := range files {
		var id []byte
		for _, u := range utf16.Encode([]rune(f.name)) {
			id = binary.BigEndian.AppendUint16(id, u)
		}
		entries = append(entries, dirRecord{ident: id, file: i})
	}
	sort.Slice(entries, func(a, b int) bool { return bytes.Compare(entries[a].ident, entries[b].ident) < 0 })
	return append(recs, entries...)
}

// isoNames maps names to unique ISO9660 level 1 identifiers: upper-case
// d-characters, 8.3, with version ";1".
func isoNames(files []isoFile) []string {
	clean := func(s string, n int) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			if b.Len() == n {
				break
			}
			if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	used := map[string]bool{}
	out := make([]string, len(files))
	for i, f := range files {
		base, ext := f.name, ""
		if dot := strings.LastIndexByte(f.name, '.'); dot > 0 {
			base, ext = f.name[:dot], f.name[dot+1:]
		}
		base, ext = clean(base, 8), clean(ext, 3)
		name := base + "." + ext
		for n := 1; used[name]; n++ {
			suffix := fmt.Sprint(n)
			b := base
			if len(b)+len(suffix) > 8 {
				b = b[:8-len(suffix)]
			}
			name = b + suffix + "." + ext
		}
		used[name] = true
		out[i] = name + ";1"
	}
	return out
}

func recordLen(r dirRecord) int {
	n := 33 + len(r.ident)
	if n%2 == 1 {
		n++
	}
	return n + len(r.system)
}

// dirSectors returns how many sectors the records take: a record never
// crosses a sector boundary.
func dirSectors(recs []dirRecord) uint32 {
	n, used := uint32(1), 0
	for _, r := range recs {
		l := recordLen(r)
		if used+l > sectorSize {
			n++
			used = 0
		}
		used += l
	}
	return n
}

func writeDir(img []byte, start, count uint32, recs []dirRecord, extents []uint32, files []isoFile) {
	off, sec := 0, start
	for i, r := range recs {
		var extent, size uint32
		switch {
		case r.file >= 0:
			extent, size = extents[r.file], uint32(len(files[r.file].data))
		case i == 0 || i == 1: // "." and "..": the root is its own parent
			extent, size = start, count*sectorSize
		}
		b := encodeRecord(r, extent, size)
		if off+len(b) > sectorSize {
			sec++
			off = 0
		}
		copy(img[int(sec)*sectorSize+off:], b)
		off += len(b)
	}
}

func encodeRecord(r dirRecord, extent, size uint32) []byte {
	b := make([]byte, recordLen(r))
	b[0] = byte(len(b))
	both32(b[2:], extent)
	both32(b[10:], size)
	copy(b[18:25], epoch[:])
	if r.dir {
		b[25] = 2
	}
	both16(b[28:], 1) // volume sequence number
	b[32] = byte(len(r.ident))
	copy(b[33:], r.ident)
	copy(b[len(b)-len(r.system):], r.system)
	return b
}

func writeVolumeDescriptor(b []byte, typ byte, volumeID string, total uint32, root []byte, pathL, pathM uint32) {
	joliet := typ == 2
	text := func(field []byte, s string) {
		if joliet {
			for i := 0; i+1 < len(field); i += 2 {
				field[i], field[i+1] = 0, ' '
			}
			for i, u := range utf16.Encode([]rune(s)) {
				if 2*i+1 < len(field) {
					binary.BigEndian.PutUint16(field[2*i:], u)
				}
			}
			return
		}
		for i := range field {
			field[i] = ' '
		}
		copy(field, s)
	}
	b[0] = typ
	copy(b[1:], "CD001")
	b[6] = 1
	text(b[8:40], "LINUX")
	text(b[40:72], volumeID)
	both32(b[80:], total)
	if joliet {
		copy(b[88:], "%/E") // UCS-2 level 3
	}
	both16(b[120:], 1) // volume set size
	both16(b[124:], 1) // volume sequence number
	both16(b[128:], sectorSize)
	both32(b[132:], 10) // path table size: the root's entry
	binary.LittleEndian.PutUint32(b[140:], pathL)
	binary.BigEndian.PutUint32(b[148:], pathM)
	copy(b[156:190], root)
	text(b[190:318], "")       // volume set
	text(b[318:446], "")       // publisher
	text(b[446:574], "")       // data preparer
	text(b[574:702], "HEARTH") // application
	text(b[702:739], "")       // copyright file
	text(b[739:776], "")       // abstract file
	text(b[776:813], "")       // bibliographic file
	copy(b[813:], epochDigits) // created
	copy(b[830:], epochDigits) // modified
	copy(b[847:], "0000000000000000")
	copy(b[864:], epochDigits) // effective
	b[881] = 1                 // file structure version
}

func writePathTable(b []byte, order binary.ByteOrder, rootExtent uint32) {
	b[0] = 1 // identifier length
	order.PutUint32(b[2:], rootExtent)
	order.PutUint16(b[6:], 1) // parent: itself
}

// susp encodes a System Use Sharing Protocol entry, version 1.
func susp(sig string, data []byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}

// px is the Rock Ridge POSIX attributes entry (RRIP 1.09 size), owned by
// root.
func px(mode, links uint32) []byte {
	d := make([]byte, 32)
	both32(d[0:], mode)
	both32(d[8:], links)
	return susp("PX", d)
}

// tf is the Rock Ridge timestamp entry with the modification time.
func tf() []byte {
	return susp("TF", append([]byte{0x02}, epoch[:]...))
}

func erEntry() []byte {
	d := []byte{byte(len(rrID)), byte(len(rrDesc)), byte(len(rrSource)), 1}
	d = append(d, rrID...)
	d = append(d, rrDesc...)
	d = append(d, rrSource...)
	return susp("ER", d)
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}
