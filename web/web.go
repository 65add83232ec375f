// Package web is Hearth's dashboard: a browser application that is a pure
// client of the public API (the same list, watch, object verbs, log,
// console and stats endpoints the CLI uses), served by `hearth server` at
// /ui/ from files embedded in the binary.
//
// There is no build step: the application is modern JavaScript as ES
// modules and plain CSS, served as written, with its few libraries
// (Preact, htm, xterm.js) vendored under ui/vendor with their licenses. So
// `go build` alone gives a working dashboard, and nothing built is
// committed that could drift from its sources.
//
// The browser tests (browser/) drive Debian's chromium with playwright-core
// against a real server and agent; they run under `go test`.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

//go:embed ui
var files embed.FS

// Prefix is where the dashboard is served.
const Prefix = "/ui/"

// csp keeps the dashboard to its own files: scripts and styles come only
// from this server and it talks only to this server's API, so an object
// a tenant wrote (a name, a label, a console line) can never load or run
// anything else. Inline styles are allowed for the terminal (xterm.js
// writes its own), inline scripts never.
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one file, ready to serve.
type asset struct {
	body, gzipped []byte
	etag, ctype   string
}

// Handler serves the dashboard under Prefix. Every file is revalidated
// (ETag, a hash of its content) rather than cached blindly, because module
// imports carry no version: a new server's files are seen at the next load.
func Handler() http.Handler { return &handler{} }

type handler struct {
	once   sync.Once
	assets map[string]*asset
}

func (h *handler) load() {
	h.assets = map[string]*asset{}
	_ = fs.WalkDir(files, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		a.ctype = mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js", ".mjs":
			a.ctype = "text/javascript; charset=utf-8"
		case ".css":
			a.ctype = "text/css; charset=utf-8"
		case ".html":
			a.ctype = "text/html; charset=utf-8"
		case "":
			a.ctype = "text/plain; charset=utf-8" // LICENSE files
		}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		if len(body) > 512 && !strings.HasPrefix(a.ctype, "image/png") {
			var b bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			zw.Write(body)
			zw.Close()
			if b.Len() < len(body) {
				a.gzipped = b.Bytes()
			}
		}
		h.assets[strings.TrimPrefix(p, "ui/")] = a
		return nil
	})
}

// Sizes returns each file's size as served, raw and gzipped (for the
// benchmarks and the bundle budget test).
func Sizes() map[string][2]int {
	h := &handler{}
	h.once.Do(h.load)
	out := map[string][2]int{}
	for name, a := range h.assets {
		z := len(a.body)
		if a.gzipped != nil {
			z = len(a.gzipped)
		}
		out[name] = [2]int{len(a.body), z}
	}
	return out
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.load)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, r.Method+" is not allowed on the dashboard's files", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(Prefix, "/"))
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		name = "index.html"
	}
	a, ok := h.assets[name]
	if !ok {
		http.Error(w, "no such file in the dashboard: "+r.URL.Path, http.StatusNotFound)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", a.etag)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Vary", "Accept-Encoding")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Frame-Options", "DENY")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gzipped != nil && acceptsGzip(r) {
		hd.Set("Content-Encoding", "gzip")
		body = a.gzipped
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
