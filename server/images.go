package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/admission"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
	"hearth.dev/hearth/serving"
)

// The bytes of an Image uploaded through the API (spec.source.upload) are
// a subresource of the Image:
//
//	PUT /apis/hearth.dev/v1alpha1/tenants/T/images/NAME/content   a tenant's image
//	PUT /apis/hearth.dev/v1alpha1/images/NAME/content             a shared image
//	GET (the same paths)                                          with Range, for agents
//
// An upload is streamed to a hidden file in DATA-DIR/images, hashed as it
// is written, checked against spec.source.checksum, and renamed to
// DATA-DIR/images/<sha256 hex>; only then does the Image's status get the
// checksum, size and phase Ready. Uploading needs the right to update the
// Image; downloading, the right to read it (hosts read everything).
//
// Content is served only to the Image it was uploaded to. The server
// records, when it receives an upload, which Image (by uid) the bytes
// belong to:
//
//	/hearth/image-uploads/<image uid>   value: sha256:<hex>
//
// and a download is answered only when the Image's status.checksum is
// what was uploaded to that very Image. status.checksum alone proves
// nothing: whoever could set it to another image's checksum (a cluster
// admin; hosts may not for uploaded images, tenants may not write status
// at all) would otherwise read that image's bytes.
//
// An upload is bounded three ways, since the data directory is etcd's
// too: by the server's --max-upload-size (413), by the tenant's
// spec.quota.imageStorage (403 QuotaExceeded), and by --upload-reserve,
// the free space it must leave on the data directory's file system (507).
// Each is checked before a byte is read when the request has a
// Content-Length, and again while the bytes arrive.
//
// The file is kept by the server that received the upload, which records
// in etcd that it holds it. In an HA control plane, a server asked for
// content it does not have fetches it from one that does (imagepeers.go),
// checks it against the Image's checksum, keeps it and serves it, so
// agents may download from any server. Uploading the same bytes again is
// allowed and only restores the file.

const subresourceContent = "content"

// imageContentMu orders an upload's rename, holder record and status
// write, and a fetched copy's rename and record, against the sweep of
// unreferenced files, so the sweep never deletes a file whose Image is
// about to name it and always sees files and records agree.
var imageContentMu sync.Mutex

func (s *Server) serveImageContent(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	k, _ := api.KindByName("Image")
	t := target{kind: k, tenant: r.PathValue("tenant"), name: r.PathValue("name")}
	switch r.Method {
	case http.MethodPut:
		return s.uploadImage(w, r, p, t)
	case http.MethodGet, http.MethodHead:
		return s.downloadImage(w, r, p, t)
	}
	return &api.Status{Kind: "Status", Code: http.StatusMethodNotAllowed, Reason: api.ReasonBadRequest,
		Message: r.Method + " is not allowed on " + r.URL.Path + " (PUT uploads, GET downloads)"}
}

func (s *Server) imageDir() string { return filepath.Join(s.cfg.DataDir, "images") }

func (s *Server) uploadImage(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	ctx := r.Context()
	obj, err := s.store.Get(ctx, t.kind, t.tenant, t.name)
	if err != nil {
		return s.hideForbidden(ctx, p, t, err)
	}
	req := t.request(auth.Update)
	req.Stored, req.New = obj, obj
	if err := auth.Authorize(p, req); err != nil {
		return err
	}
	img := obj.(*api.Image)
	ref := imageRef(t)
	switch {
	case !img.Spec.Source.Upload:
		return api.NewBadRequest("%s is fetched from spec.source.url %s; only images with spec.source.upload: true take uploads",
			ref, img.Spec.Source.URL)
	case img.Metadata.DeletionTimestamp != nil:
		return &api.Status{Kind: "Status", Code: http.StatusConflict, Reason: api.ReasonConflict, Message: ref + " is being deleted"}
	}

	// The bounds: the server's limit, the tenant's quota, the disk.
	limit, quotaLeft := s.cfg.MaxUploadSize, int64(-1)
	used, quota, err := s.quota.ImageStorage(ctx, t.tenant, t.name)
	if err != nil {
		return err
	}
	if quota > 0 {
		quotaLeft = max(quota-used, 0)
	}
	switch size := r.ContentLength; {
	case size > limit:
		return uploadTooLarge(ref, size, limit)
	case quotaLeft >= 0 && size > quotaLeft:
		return admission.ImageStorageExceeded(t.tenant, size, used, quota)
	}
	dir := s.imageDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := s.checkUploadRoom(ref, max(r.ContentLength, 0)); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	sink := &uploadSink{w: io.MultiWriter(tmp, h), limit: limit, s: s, ref: ref}
	if quotaLeft >= 0 && quotaLeft < limit {
		sink.limit = quotaLeft
		sink.over = admission.ImageStorageExceeded(t.tenant, -1, used, quota)
	}
	// An upload takes as long as it needs while bytes keep coming; a
	// pause of the read timeout ends it.
	body := serving.For(w, s.limits.ReadTimeout).Body(r.Body)
	n, err := io.CopyBuffer(sink, body, make([]byte, 1<<20))
	if err != nil {
		// Refused before the body ended (a bound was reached): the body's
		// end did not restore the answer's write deadline, so set it here.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.limits.WriteTimeout))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if st := (*api.Status)(nil); errors.As(err, &st) {
		return st // a bound was reached: nothing was kept
	}
	if err != nil {
		return api.NewBadRequest("upload of %s broke off after %d bytes: %v; nothing was kept, upload it again", ref, n, err)
	}
	sum := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if want := img.Spec.Source.Checksum; want != "" && want != sum {
		return api.NewInvalid("Image", t.name, api.FieldErrors{{Field: "spec.source.checksum",
			Detail: fmt.Sprintf("is %s, but the %d bytes uploaded have checksum %s; the upload was discarded (check the file, or the checksum)", want, n, sum)}})
	}
	if have := img.Status.Checksum; have != "" && have != sum {
		return contentFixed(ref, have, sum)
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return err
	}

	imageContentMu.Lock()
	defer imageContentMu.Unlock()
	if err := os.Rename(tmp.Name(), filepath.Join(dir, strings.TrimPrefix(sum, "sha256:"))); err != nil {
		return err
	}
	// Recorded before the status names the file, so other servers can find
	// it as soon as anyone can ask for it. Should the status write fail, the
	// sweep removes both.
	if err := s.recordImageHolder(ctx, strings.TrimPrefix(sum, "sha256:")); err != nil {
		return fmt.Errorf("recording that this server holds the upload: %w", err)
	}
	// Which Image the bytes were uploaded to, before the status names
	// them, so that the content is never served without it; undone if
	// the status write fails.
	prev, err := s.uploadedTo(ctx, img.Metadata.UID)
	if err != nil {
		return err
	}
	if err := s.recordUpload(ctx, img.Metadata.UID, sum); err != nil {
		return fmt.Errorf("recording the upload of %s: %w", ref, err)
	}
	now := time.Now().UTC()
	gctx := store.WithGuards(ctx)
	out, err := s.store.Update(gctx, t.kind, t.tenant, t.name, 0, func(cur api.Object) (api.Object, error) {
		ci := cur.(*api.Image)
		if ci.Metadata.UID != img.Metadata.UID {
			return nil, api.NewNotFound("Image", t.tenant, t.name) // deleted and made again meanwhile
		}
		if have := ci.Status.Checksum; have != "" && have != sum {
			return nil, contentFixed(ref, have, sum)
		}
		// Checked again in the write, guarded: uploads of the tenant
		// that finish at once must not both take the last room.
		if used, quota, err := s.quota.ImageStorage(gctx, t.tenant, t.name); err != nil {
			return nil, err
		} else if quota > 0 && used+n > quota {
			return nil, admission.ImageStorageExceeded(t.tenant, n, used, quota)
		}
		st := &ci.Status
		changed := st.Checksum != sum || st.Size != api.Bytes(n) || st.Phase != api.ImageReady
		st.Checksum, st.Size, st.Phase = sum, api.Bytes(n), api.ImageReady
		if st.SetCondition(api.Condition{Type: api.ConditionUploaded, Status: api.ConditionTrue, Reason: api.ReasonUploaded,
			Message: fmt.Sprintf("%d bytes with checksum %s", n, sum)}, now) || changed {
			return ci, nil
		}
		return nil, store.ErrUnchanged
	})
	if err != nil {
		if prev != sum {
			if uerr := s.recordUpload(context.WithoutCancel(ctx), img.Metadata.UID, prev); uerr != nil {
				slog.Warn("undoing the record of a refused upload; the sweep will", "image", ref, "err", uerr)
			}
		}
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// uploadTooLarge is the refusal of an upload over --max-upload-size.
func uploadTooLarge(ref string, size, limit int64) error {
	what := "more than " + api.Bytes(limit).String()
	if size > limit {
		what = api.Bytes(size).String()
	}
	return api.NewTooLarge("the upload of %s is %s, and this server takes uploads of at most %s (hearth server --max-upload-size); nothing was kept",
		ref, what, api.Bytes(limit))
}

// checkUploadRoom refuses an upload of size more bytes when the image
// directory's file system would then have less than --upload-reserve
// free: etcd lives on it too, and stops when its disk is full.
func (s *Server) checkUploadRoom(ref string, size int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.imageDir(), &st); err != nil {
		return fmt.Errorf("checking the free space for uploads: %w", err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free-size < s.cfg.UploadReserve {
		return api.NewInsufficientStorage("not enough space for the upload of %s: %s free in %s, and %s must stay free for etcd (hearth server --upload-reserve); nothing was kept",
			ref, api.Bytes(max(free, 0)), s.imageDir(), api.Bytes(s.cfg.UploadReserve))
	}
	return nil
}

// uploadCheckEvery is how many bytes an upload writes between two looks
// at the free space.
const uploadCheckEvery = 4 << 20

// uploadSink is where an upload's bytes go: the file and its hash. It
// stops the upload with a Status when the bytes pass limit (over, or
// uploadTooLarge) or would leave less than the reserve free.
type uploadSink struct {
	w          io.Writer
	n, limit   int64
	over       error
	s          *Server
	ref        string
	sinceCheck int64
}

func (u *uploadSink) Write(p []byte) (int, error) {
	if u.n+int64(len(p)) > u.limit {
		if u.over != nil {
			return 0, u.over
		}
		return 0, uploadTooLarge(u.ref, -1, u.limit)
	}
	if u.sinceCheck += int64(len(p)); u.sinceCheck >= uploadCheckEvery {
		u.sinceCheck = 0
		if err := u.s.checkUploadRoom(u.ref, uploadCheckEvery); err != nil {
			return 0, err
		}
	}
	n, err := u.w.Write(p)
	u.n += int64(n)
	return n, err
}

// imageUploadsPrefix holds which Image (by uid) uploaded content belongs
// to: /hearth/image-uploads/<uid> → sha256:<hex>.
const imageUploadsPrefix = "/hearth/image-uploads/"

// uploadedTo returns the checksum of the content uploaded to the Image
// with uid, or "".
func (s *Server) uploadedTo(ctx context.Context, uid string) (string, error) {
	resp, err := s.etcd.Get(ctx, imageUploadsPrefix+uid)
	if err != nil {
		return "", fmt.Errorf("reading which content was uploaded to the image: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// recordUpload records that sum was uploaded to the Image with uid (""
// deletes the record).
func (s *Server) recordUpload(ctx context.Context, uid, sum string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var err error
	if sum == "" {
		_, err = s.etcd.Delete(ctx, imageUploadsPrefix+uid)
	} else {
		_, err = s.etcd.Put(ctx, imageUploadsPrefix+uid, sum)
	}
	return err
}

func contentFixed(ref, have, got string) error {
	return &api.Status{Kind: "Status", Code: http.StatusConflict, Reason: api.ReasonConflict,
		Message: fmt.Sprintf("%s already holds uploaded content %s, and this upload is %s: an image's content cannot change, since volumes are clones of it; create a new image", ref, have, got)}
}

func imageRef(t target) string {
	if t.tenant == "" {
		return "shared Image " + t.name
	}
	return "Image " + t.name + " in tenant " + t.tenant
}

func (s *Server) downloadImage(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	ctx := r.Context()
	// A download (and the fetch from another server before it) takes as
	// long as it needs while each write goes through in the write timeout.
	w = serving.For(w, s.limits.WriteTimeout).Stream(w)
	if err := auth.Authorize(p, t.request(auth.Get)); err != nil {
		return err
	}
	obj, err := s.store.Get(ctx, t.kind, t.tenant, t.name)
	if err != nil {
		return err
	}
	if !s.sees(ctx, p, t.kind, obj) {
		return api.NewNotFound(t.kind.Kind, t.tenant, t.name)
	}
	img := obj.(*api.Image)
	ref := imageRef(t)
	if !img.Spec.Source.Upload {
		return api.NewBadRequest("%s is not uploaded: fetch it from spec.source.url %s", ref, img.Spec.Source.URL)
	}
	sum := img.Status.Checksum
	if sum == "" {
		return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: fmt.Sprintf("%s has no content yet: upload it with `hearth image upload %s FILE`", ref, t.name)}
	}
	// Only what was uploaded to this very Image: its status.checksum may
	// name another image's content.
	if got, err := s.uploadedTo(ctx, img.Metadata.UID); err != nil {
		return err
	} else if got != sum {
		return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: fmt.Sprintf("%s has no content uploaded to it under its status.checksum %s: upload it with `hearth image upload %s FILE`", ref, sum, t.name)}
	}
	file := filepath.Join(s.imageDir(), strings.TrimPrefix(sum, "sha256:"))
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		if r.Header.Get(peerFetchHeader) != "" {
			// Another server asking: answer from this disk only.
			return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
				Message: fmt.Sprintf("the content (%s) of %s is not on this server (%s)", sum, ref, s.cfg.AdvertiseURL)}
		}
		if err := s.fetchImageContent(r, ref, sum); err != nil {
			return err
		}
		f, err = os.Open(file)
		if errors.Is(err, fs.ErrNotExist) {
			// Swept between the fetch and here: its Image went away.
			return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
				Message: fmt.Sprintf("the content (%s) of %s was removed from this server (%s) as soon as it was fetched: no Image names it any more", sum, ref, s.cfg.AdvertiseURL)}
		}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// A strong ETag lets a download that broke off resume with If-Range.
	w.Header().Set("ETag", `"`+strings.TrimPrefix(sum, "sha256:")+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

// imageSweepEvery is how often uploaded files are checked against the
// Images even when no Image was deleted.
const imageSweepEvery = time.Hour

// collectImageContent deletes uploaded files that no Image names any
// more: after an Image is deleted, and every imageSweepEvery (which also
// catches deletions while this server was down). Every server sweeps its
// own data directory.
func (s *Server) collectImageContent(ctx context.Context) {
	k, _ := api.KindByName("Image")
	for ctx.Err() == nil {
		s.sweepImageContent(ctx, k)
		wctx, cancel := context.WithTimeout(ctx, imageSweepEvery)
		go func() {
			select {
			case <-s.holders.lost: // record again what this server holds
				cancel()
			case <-wctx.Done():
			}
		}()
		for resp := range s.etcd.Watch(wctx, store.KindPrefix(k), clientv3.WithPrefix(), clientv3.WithFilterPut()) {
			if len(resp.Events) > 0 {
				break
			}
		}
		cancel()
		// A delete often comes with others (a tenant going away).
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// uploadStale is how old a hidden file (an upload, or a copy fetched from
// another server) must be before the sweep takes it for the leftover of a
// crash rather than a transfer under way.
const uploadStale = 24 * time.Hour

// sweepImageContent deletes the files no Image names, with this server's
// records of holding them, and keeps the records true to the disk: a kept
// file without a record gets one (say, kept from before records existed),
// and a record whose file is gone is deleted.
func (s *Server) sweepImageContent(ctx context.Context, k *api.KindInfo) {
	imageContentMu.Lock()
	defer imageContentMu.Unlock()
	entries, err := os.ReadDir(s.imageDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	held, err := s.recordedImageHolds(ctx)
	if err != nil {
		slog.Warn("sweeping uploaded image content: reading this server's records", "err", err)
		return
	}
	recorded, err := s.etcd.Get(ctx, imageUploadsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return
	}
	if len(entries) == 0 && len(held) == 0 && recorded.Count == 0 {
		return
	}
	objs, listRev, err := s.store.List(ctx, k, store.KindPrefix(k), nil)
	if err != nil {
		return
	}
	uploads, err := s.etcd.Get(ctx, imageUploadsPrefix, clientv3.WithPrefix())
	if err != nil {
		return
	}
	// A file stays while an Image it was uploaded to exists, or an
	// uploaded Image's status names it (content uploaded before uploads
	// were recorded: kept, but served only once uploaded again).
	keep, uids := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		img := o.(*api.Image)
		uids[img.Metadata.UID] = true
		if sum := img.Status.Checksum; sum != "" && img.Spec.Source.Upload {
			keep[strings.TrimPrefix(sum, "sha256:")] = true
		}
	}
	for _, kv := range uploads.Kvs {
		uid := strings.TrimPrefix(string(kv.Key), imageUploadsPrefix)
		if uids[uid] {
			keep[strings.TrimPrefix(string(kv.Value), "sha256:")] = true
			continue
		}
		// Unless written after the list (by another server, for an Image
		// made since).
		key := string(kv.Key)
		if _, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "<", listRev+1)).
			Then(clientv3.OpDelete(key)).Commit(); err != nil {
			slog.Warn("deleting the upload record of a deleted image", "uid", uid, "err", err)
		}
	}
	present := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < uploadStale {
				continue
			}
		case keep[name]:
			present[name] = true
			if !held[name] {
				if err := s.recordImageHolder(ctx, name); err != nil {
					slog.Warn("recording uploaded image content this server holds", "file", name, "err", err)
				}
			}
			continue
		}
		if err := os.Remove(filepath.Join(s.imageDir(), name)); err != nil {
			present[name] = true // still here, so still held
			continue
		}
		slog.Info("removed uploaded image content no Image uses", "file", name)
	}
	for name := range held {
		if present[name] {
			continue
		}
		if err := s.forgetImageHolder(ctx, name); err != nil {
			slog.Warn("deleting the record of uploaded image content this server no longer holds", "file", name, "err", err)
		}
	}
}
