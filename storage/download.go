package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"hearth.dev/hearth/atomicfile"
)

// partMeta is kept beside a partial download (<part>.meta) to decide
// whether it can be resumed: the URL it came from and what the server
// said identifies that version of the file.
type partMeta struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
}

// validator is what to send as If-Range, so that a server whose file has
// changed sends the new file whole instead of the rest of it. Weak ETags
// cannot be used there.
func (m partMeta) validator() string {
	if m.ETag != "" && !strings.HasPrefix(m.ETag, "W/") {
		return m.ETag
	}
	return m.LastModified
}

// download fetches rawURL into the file part, resuming what an earlier
// call left there when that is safe, and returns the checksum of the whole
// file and whether it resumed. verified says the caller will check the
// checksum, so resumed bytes need not be proven to be of the same file.
//
// When the transfer breaks, part is kept for the next call if the server
// takes ranges; otherwise it is deleted, as there is nothing to resume.
func (c *ImageCache) download(ctx context.Context, rawURL string, get Getter, part string, verified bool, report Progress) (sum string, resumed bool, err error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", false, err
	}
	defer f.Close()

	h := sha256.New()
	meta := readMeta(part)
	var offset int64
	var ifRange string
	if meta.URL == rawURL {
		ifRange = meta.validator()
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 && (verified || ifRange != "") {
		// Hash what is there; the file offset ends up at its end, where
		// the rest goes.
		if offset, err = io.Copy(h, f); err != nil {
			return "", false, err
		}
	}

	resp, err := get(ctx, offset, ifRange)
	if err != nil {
		return "", false, err
	}
	if offset > 0 && !(resp.StatusCode == http.StatusPartialContent && rangeStart(resp) == offset) {
		// No resuming: the server ignored the range (200, possibly
		// because the file changed) or refused it (416: the partial
		// file is longer than the file now is). Start over.
		offset = 0
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			if resp, err = get(ctx, 0, ""); err != nil {
				return "", false, err
			}
		}
	}
	defer resp.Body.Close()
	resumed = offset > 0
	if !resumed && resp.StatusCode != http.StatusOK {
		removePartial(part)
		return "", false, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	if !resumed {
		if err := restart(f, h); err != nil {
			return "", false, err
		}
		meta = partMeta{URL: rawURL, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
		if err := writeMeta(part, meta); err != nil {
			return "", false, err
		}
	}

	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = offset + resp.ContentLength
	}
	p := newProgressWriter(total, offset, report)
	if _, err := io.CopyBuffer(io.MultiWriter(f, h, p), resp.Body, make([]byte, 1<<20)); err != nil {
		canResume := resumed || resp.Header.Get("Accept-Ranges") == "bytes"
		if !canResume || !(verified || meta.validator() != "") {
			removePartial(part)
		}
		return "", false, fmt.Errorf("download interrupted after %d bytes: %w", p.done, err)
	}
	p.finish()
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), resumed, nil
}

// restart empties the partial file for a download from the start.
func restart(f *os.File, h hash.Hash) error {
	h.Reset()
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// get requests rawURL from byte offset on. Compression is refused: the
// bytes that arrive must be the file's own, for ranges and checksums to
// mean anything.
func (c *ImageCache) get(ctx context.Context, rawURL string, offset int64, ifRange string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	return client.Do(req)
}

// rangeStart returns the first byte of a 206 response's Content-Range
// ("bytes 100-199/200"), or -1.
func rangeStart(resp *http.Response) int64 {
	cr, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes ")
	if !ok {
		return -1
	}
	first, _, ok := strings.Cut(cr, "-")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func readMeta(part string) partMeta {
	var m partMeta
	if b, err := os.ReadFile(part + ".meta"); err == nil {
		json.Unmarshal(b, &m) // a bad file is no file: start over
	}
	return m
}

func writeMeta(part string, m partMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(part+".meta", b, 0o600)
}

func removePartial(part string) {
	os.Remove(part)
	os.Remove(part + ".meta")
}

// progressWriter counts the bytes written through it and reports them,
// at most every ProgressInterval.
type progressWriter struct {
	done, total int64
	last        time.Time
	report      Progress
}

// newProgressWriter reports the start at once: done bytes (already there)
// of total.
func newProgressWriter(total, done int64, report Progress) *progressWriter {
	report(done, total)
	return &progressWriter{done: done, total: total, last: time.Now(), report: report}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if now := time.Now(); now.Sub(p.last) >= ProgressInterval {
		p.last = now
		p.report(p.done, p.total)
	}
	return len(b), nil
}

// finish reports the end; the total is known by then.
func (p *progressWriter) finish() {
	p.report(p.done, p.done)
}

// copyContext is io.Copy that stops when ctx is done, for reads (of local
// files) that do not watch a context themselves.
func copyContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(dst, ctxReader{ctx, src}, make([]byte, 1<<20))
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
