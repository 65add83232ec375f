package boot

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/atomicfile"
)

// A boot is what the service issues when it serves a machine its
// profile's boot (a kernel or a profile's script, never a wait or
// local-disk script): a random id that the URLs of the boot's files,
// artifacts and report carry (profile.BootURL), and a report token
// derived from it. Knowing a machine's name is therefore not enough to
// read its rendered files (which carry the token, and may carry password
// hashes) or to report for it: a client needs the script, which the
// service gives only to the machine's own address.
//
// A machine has one boot at a time: issuing a new one ends the last, so
// an old boot's files, artifacts and token stop working. A boot's token
// is good for one report. Boots are kept in DATA-DIR/boots.json, so a
// restarted service still serves the boots it issued; a boot it does not
// know (the file was lost) is refused with a message saying the machine
// must network-boot again.
type bootRecord struct {
	ID      string `json:"id"`
	Machine string `json:"machine"`
	// UID is the machine's: a machine deleted and discovered again is
	// another machine, and its predecessor's boot is not its own.
	UID string `json:"uid"`
	MAC string `json:"mac"`
	// Addr is the address the boot's script was served to.
	Addr   netip.Addr `json:"addr"`
	Issued time.Time  `json:"issued"`
	// Reported is when the boot's report was taken: its token is spent.
	Reported *time.Time `json:"reported,omitempty"`
}

// bootIDLen is the length of a boot id: 128 random bits in hex.
const bootIDLen = 32

// bootTable holds the current boot of each machine.
type bootTable struct {
	path string

	mu        sync.Mutex
	byID      map[string]*bootRecord
	byMachine map[string]*bootRecord
}

type bootsFile struct {
	Boots []*bootRecord `json:"boots"`
}

// loadBoots reads the boots of path; a missing file is no boots, and an
// unreadable one is logged and ignored (its machines boot again).
func loadBoots(path string) *bootTable {
	t := &bootTable{path: path, byID: map[string]*bootRecord{}, byMachine: map[string]*bootRecord{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return t
	}
	var f bootsFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		slog.Warn("cannot read the boots this service issued; machines in the middle of a boot must network-boot again", "file", path, "err", err)
		return t
	}
	for _, r := range f.Boots {
		if r == nil || len(r.ID) != bootIDLen || r.Machine == "" {
			continue
		}
		if old := t.byMachine[r.Machine]; old != nil {
			delete(t.byID, old.ID)
		}
		t.byID[r.ID], t.byMachine[r.Machine] = r, r
	}
	return t
}

// issue starts a new boot of m, served to addr, ending m's last one.
func (t *bootTable) issue(m *api.Machine, addr netip.Addr, now time.Time) bootRecord {
	var b [bootIDLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	r := &bootRecord{ID: hex.EncodeToString(b[:]), Machine: m.Metadata.Name, UID: m.Metadata.UID, MAC: m.Spec.MAC,
		Addr: addr, Issued: now.UTC()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byMachine[r.Machine]; old != nil {
		delete(t.byID, old.ID)
	}
	t.byID[r.ID], t.byMachine[r.Machine] = r, r
	t.saveLocked()
	return *r
}

// lookup returns the boot with id, if it is a machine's current boot.
func (t *bootTable) lookup(id string) (bootRecord, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.byID[id]
	if !ok {
		return bootRecord{}, false
	}
	return *r, true
}

// spend marks the boot's token used; it returns false when it was used
// already (or the boot is gone).
func (t *bootTable) spend(id string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.byID[id]
	if !ok || r.Reported != nil {
		return false
	}
	at := now.UTC()
	r.Reported = &at
	t.saveLocked()
	return true
}

// unspend gives a boot its token back, when its report could not be
// written and the machine should try again.
func (t *bootTable) unspend(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.byID[id]; ok && r.Reported != nil {
		r.Reported = nil
		t.saveLocked()
	}
}

// forget drops the boots of machines that are gone: keep says whether a
// machine (by name and uid) still exists.
func (t *bootTable) forget(keep func(name, uid string) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	for name, r := range t.byMachine {
		if !keep(name, r.UID) {
			delete(t.byMachine, name)
			delete(t.byID, r.ID)
			changed = true
		}
	}
	if changed {
		t.saveLocked()
	}
}

// saveLocked writes the table (unless it has no path: tests). A failure
// is logged: the boots still work until the service restarts, and then
// fail clearly.
func (t *bootTable) saveLocked() {
	if t.path == "" {
		return
	}
	f := bootsFile{Boots: make([]*bootRecord, 0, len(t.byMachine))}
	for _, r := range t.byMachine {
		f.Boots = append(f.Boots, r)
	}
	sort.Slice(f.Boots, func(i, j int) bool { return f.Boots[i].Machine < f.Boots[j].Machine })
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = atomicfile.Write(t.path, append(b, '\n'), 0o600)
	}
	if err != nil {
		slog.Warn("cannot record the boots this service issued; they end when it restarts", "file", t.path, "err", err)
	}
}

// reportToken is the secret of one boot's report: an HMAC of the boot's
// id under the service's key, so it is never stored, and dies with the
// boot.
func (s *Service) reportToken(bootID string) string {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("report\x00" + bootID))
	return hex.EncodeToString(h.Sum(nil))
}

// tokenMatches compares a presented token with a boot's in constant time.
func (s *Service) tokenMatches(bootID, tok string) bool {
	return hmac.Equal([]byte(tok), []byte(s.reportToken(bootID)))
}

func (r bootRecord) String() string {
	return fmt.Sprintf("boot %s of machine %s (issued %s to %s)", r.ID, r.Machine, r.Issued.Format(time.RFC3339), r.Addr)
}
