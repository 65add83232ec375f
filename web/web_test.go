package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"hearth.dev/hearth/web"
)

// TestBundleBudget keeps what a first visit loads small: every file but
// the terminal (loaded only when a console opens), gzipped as served.
func TestBundleBudget(t *testing.T) {
	const budget = 64 << 10
	var first, console, raw int
	for name, sz := range web.Sizes() {
		switch {
		case strings.HasPrefix(name, "vendor/xterm/"):
			if !strings.Contains(name, "LICENSE") {
				console += sz[1]
			}
		case strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".css") || strings.HasSuffix(name, ".html"):
			first += sz[1]
			raw += sz[0]
		}
	}
	t.Logf("first load: %d bytes gzipped (%d raw); the console adds %d bytes gzipped", first, raw, console)
	if first > budget {
		t.Errorf("the dashboard's first load is %d bytes gzipped, over its budget of %d", first, budget)
	}
}

func TestHandler(t *testing.T) {
	h := web.Handler()
	for _, c := range []struct {
		method, path, enc string
		code              int
		wantEnc           string
	}{
		{"GET", "/ui/", "gzip", 200, "gzip"},
		{"GET", "/ui/js/main.js", "", 200, ""},
		{"GET", "/ui/js/main.js", "gzip;q=0", 200, ""},
		{"HEAD", "/ui/app.css", "gzip", 200, "gzip"},
		{"POST", "/ui/", "", 405, ""},
		{"GET", "/ui/../server.go", "", 404, ""},
		{"GET", "/ui/vendor/", "", 404, ""},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		if c.enc != "" {
			r.Header.Set("Accept-Encoding", c.enc)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.code || w.Header().Get("Content-Encoding") != c.wantEnc {
			t.Errorf("%s %s (Accept-Encoding %q): %d, encoding %q; want %d, %q", c.method, c.path, c.enc, w.Code, w.Header().Get("Content-Encoding"), c.code, c.wantEnc)
		}
		if c.code == http.StatusOK && w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: no nosniff", c.method, c.path)
		}
	}
}
