package dhcp

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"time"
)

// The lease file is a journal: one JSON line per address whose binding
// changed, the last line for an address winning. Lines are appended by
// one goroutine, in batches gathered while it wrote the previous one, so
// a burst of clients costs one write, not one per client, and no worker
// waits for the disk. It is rewritten from the table when it grows to
// twice the bindings it holds. Appends are not fsynced (like Kea's
// memfile): a crashed process loses nothing, a lost machine the last
// moments.
type leaseFile struct {
	path  string
	f     *os.File
	w     *bufio.Writer
	lines int
	err   error // first write error, reported when Serve returns
}

// loadLeases restores the bindings of path that have not expired.
func loadLeases(path string, t *leaseTable, now time.Time) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: reading lease file: %w", err)
	}
	defer f.Close()
	last := make(map[string]leaseRecord)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r leaseRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue // a line cut short by a crash
		}
		last[r.IP] = r
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("dhcp: reading lease file %s: %w", path, err)
	}
	for _, r := range last {
		exp := time.Unix(r.Expires, 0)
		ip, err := netip.ParseAddr(r.IP)
		mac, ok := parseHW(r.MAC)
		if err != nil || !ok || !exp.After(now) {
			continue
		}
		t.restore(keyOf(mac), ip, exp, r.Hostname, r.Reserved)
	}
	return nil
}

// parseHW reads a hardware address of any length as written by
// net.HardwareAddr.String.
func parseHW(s string) ([]byte, bool) {
	if s == "" {
		return nil, false
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	return b, err == nil && len(b) <= 16
}

// openLeaseFile rewrites path from the table and opens it for appending.
func openLeaseFile(path string, t *leaseTable) (*leaseFile, error) {
	lf := &leaseFile{path: path}
	if err := lf.rewrite(t); err != nil {
		return nil, err
	}
	return lf, nil
}

func (lf *leaseFile) rewrite(t *leaseTable) error {
	recs := t.allRecords()
	tmp := lf.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("dhcp: writing lease file: %w", err)
	}
	w := bufio.NewWriter(f)
	err = writeRecords(w, recs)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, lf.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dhcp: writing lease file %s: %w", lf.path, err)
	}
	if lf.f != nil {
		lf.f.Close()
	}
	lf.f, err = os.OpenFile(lf.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dhcp: opening lease file: %w", err)
	}
	lf.w = bufio.NewWriterSize(lf.f, 64<<10)
	lf.lines = len(recs)
	return nil
}

func writeRecords(w *bufio.Writer, recs []leaseRecord) error {
	for i := range recs {
		b, err := json.Marshal(&recs[i])
		if err != nil {
			return err
		}
		w.Write(b)
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
	}
	return nil
}

// run writes changes as the table reports them until ctx ends, then
// writes the last ones and closes the file.
func (lf *leaseFile) run(ctx context.Context, t *leaseTable) error {
	for {
		select {
		case <-t.notify:
			lf.flush(t)
		case <-ctx.Done():
			lf.flush(t)
			if err := lf.f.Close(); lf.err == nil && err != nil {
				lf.err = fmt.Errorf("dhcp: closing lease file: %w", err)
			}
			return lf.err
		}
	}
}

func (lf *leaseFile) flush(t *leaseTable) {
	recs := t.takeDirty()
	if len(recs) == 0 {
		return
	}
	err := writeRecords(lf.w, recs)
	if err == nil {
		err = lf.w.Flush()
	}
	lf.lines += len(recs)
	if err == nil && lf.lines > 2*t.boundCount()+1024 {
		err = lf.rewrite(t)
	}
	if err != nil && lf.err == nil {
		lf.err = fmt.Errorf("dhcp: lease file %s: %w", lf.path, err)
	}
}
