package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestE2EImageUpload: `hearth image upload` creates the image, sends the
// file with a progress line, and the image is Ready with its checksum.
func TestE2EImageUpload(t *testing.T) {
	c := adminClient(t)
	tenant := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: "images"}}
	if _, err := c.Create(t.Context(), tenant); err != nil && !api.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := hearthErr(t, "", "image", "upload", "disk", file, "-t", "images")
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, errOut)
	}
	wantContains(t, "upload output", out, "image/disk created", "image/disk uploaded: 3.0Mi, sha256:")
	wantContains(t, "upload progress", errOut, "100% [========================] 3.0Mi/3.0Mi")
	got := hearth(t, "", "get", "image", "disk", "-t", "images", "-o", "wide")
	wantContains(t, "get image", got, "Ready", "raw", "upload")

	// The content cannot change, and flags for a new image are refused.
	other := filepath.Join(t.TempDir(), "other.raw")
	os.WriteFile(other, []byte("other"), 0o644)
	if _, errOut, err := hearthErr(t, "", "image", "upload", "disk", other, "-t", "images"); err == nil || !strings.Contains(errOut, "cannot change") {
		t.Fatalf("uploading other bytes: %v\n%s", err, errOut)
	}
	if _, errOut, err := hearthErr(t, "", "image", "upload", "disk", file, "-t", "images", "--format", "iso"); err == nil || !strings.Contains(errOut, "only apply to a new image") {
		t.Fatalf("--format on an existing image: %v\n%s", err, errOut)
	}
}

func TestProgressBarLine(t *testing.T) {
	p := &progressBar{total: 100 << 20, start: time.Unix(0, 0), done: 25 << 20}
	got := p.line(time.Unix(5, 0))
	want := " 25% [======>                 ] 25.0Mi/100.0Mi  5.0Mi/s  ETA 15s"
	if got != want {
		t.Fatalf("line:\n got %q\nwant %q", got, want)
	}
}
