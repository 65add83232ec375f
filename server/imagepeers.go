package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Uploaded image content in an HA control plane.
//
// Every server that holds the bytes of an uploaded image (it received the
// upload, or fetched a copy) says so in etcd, next to the other servers
// holding the same bytes:
//
//	/hearth/image-content/<sha256 hex>/<advertise URL, query-escaped>   value: the advertise URL
//
// A download that misses on a server asks the holders in turn for the
// whole file, with the caller's own Authorization (tokens live in etcd, so
// every server accepts them) and trusting only the cluster CA; it keeps the
// copy once its checksum is the Image's, records itself as a holder, and
// serves the copy like any other. Misses for the same bytes share one
// fetch. A server asked by a peer (peerFetchHeader) answers from its own
// disk only, so servers with stale records never ask each other in a
// circle.
//
// The records live on a lease of the server's (holderLease), revoked when
// it closes and expiring a minute after it stops renewing it, so a server
// that is gone for good is not asked for long.
//
// The sweep of unreferenced files (sweepImageContent) deletes a server's
// record with its file, records files it keeps but has no record of (kept
// from before, or after a lost write), and drops records of files that are
// gone from its disk.

const imageHoldersPrefix = "/hearth/image-content/"

// peerFetchHeader marks a download made by another server on a miss: the
// answer comes from this server's disk or is a 404, never from a third.
const peerFetchHeader = "Hearth-Peer-Fetch"

// peerFetchStall is how long a fetch from a peer may go without a byte
// before it is given up for the next holder.
const peerFetchStall = time.Minute

func imageHolderPrefix(sumHex string) string { return imageHoldersPrefix + sumHex + "/" }

// imageHolderSuffix ends the holder keys of this server.
func (s *Server) imageHolderSuffix() string { return "/" + url.QueryEscape(s.cfg.AdvertiseURL) }

func (s *Server) imageHolderKey(sumHex string) string {
	return imageHoldersPrefix + sumHex + s.imageHolderSuffix()
}

// holderLeaseTTL is how long the records of a server that stopped
// renewing them (gone for good, or cut off) outlive it, in seconds.
const holderLeaseTTL = 60

// holderLease is the etcd lease this server's holder records live on, so
// that a server that is gone takes its records with it and nobody keeps
// asking it. When the lease is lost (the server was cut off from etcd for
// longer than the TTL) the next record takes a new one, and lost wakes
// the sweep, which records again what this server holds.
type holderLease struct {
	mu   sync.Mutex
	id   clientv3.LeaseID
	lost chan struct{}
	// closed is set when the server closes: no more records.
	closed bool
}

// holderLeaseID returns the live lease for holder records, granting one
// (kept alive until ctx of the server ends) if there is none.
func (s *Server) holderLeaseID(ctx context.Context) (clientv3.LeaseID, error) {
	hl := &s.holders
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if hl.closed {
		return 0, errors.New("the server is closing")
	}
	if hl.id != 0 {
		return hl.id, nil
	}
	resp, err := s.etcd.Grant(ctx, holderLeaseTTL)
	if err != nil {
		return 0, err
	}
	alive, err := s.etcd.KeepAlive(s.runCtx, resp.ID)
	if err != nil {
		return 0, err
	}
	hl.id = resp.ID
	go func() {
		for range alive {
		}
		hl.mu.Lock()
		if hl.id == resp.ID {
			hl.id = 0
		}
		hl.mu.Unlock()
		if s.runCtx.Err() == nil {
			slog.Warn("lost the lease of this server's image holder records; recording them again")
			select {
			case hl.lost <- struct{}{}:
			default:
			}
		}
	}()
	return hl.id, nil
}

// recordImageHolder says in etcd that this server holds the file sumHex.
// Call it with imageContentMu held, once the file is in place.
func (s *Server) recordImageHolder(ctx context.Context, sumHex string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	lease, err := s.holderLeaseID(ctx)
	if err != nil {
		return err
	}
	_, err = s.etcd.Put(ctx, s.imageHolderKey(sumHex), s.cfg.AdvertiseURL, clientv3.WithLease(lease))
	return err
}

// forgetImageHolder deletes this server's record of holding sumHex.
func (s *Server) forgetImageHolder(ctx context.Context, sumHex string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := s.etcd.Delete(ctx, s.imageHolderKey(sumHex))
	return err
}

// recordedImageHolds returns the files this server is recorded as holding.
func (s *Server) recordedImageHolds(ctx context.Context) (map[string]bool, error) {
	resp, err := s.etcd.Get(ctx, imageHoldersPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	suffix := s.imageHolderSuffix()
	held := map[string]bool{}
	for _, kv := range resp.Kvs {
		if rest, ok := strings.CutSuffix(strings.TrimPrefix(string(kv.Key), imageHoldersPrefix), suffix); ok && !strings.Contains(rest, "/") {
			held[rest] = true
		}
	}
	return held, nil
}

// imageFetch is one fetch of a file from the peers, shared by the
// downloads that wait for it.
type imageFetch struct {
	done    chan struct{}
	err     error // set before done is closed
	waiters int   // under imageFetches' lock
	cancel  context.CancelFunc
}

// imageFetches are the fetches under way, by destination file.
var imageFetches = struct {
	sync.Mutex
	m map[string]*imageFetch
}{m: map[string]*imageFetch{}}

// fetchImageContent puts the file of checksum sum into the image
// directory, fetched from a server that holds it, on behalf of the
// download r. Concurrent calls for the same file share one fetch, which
// goes on while any of them waits (it is not tied to the first caller).
func (s *Server) fetchImageContent(r *http.Request, ref, sum string) error {
	key := filepath.Join(s.imageDir(), strings.TrimPrefix(sum, "sha256:"))
	imageFetches.Lock()
	f := imageFetches.m[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.Background())
		f = &imageFetch{done: make(chan struct{}), cancel: cancel}
		imageFetches.m[key] = f
		authz, path := r.Header.Get("Authorization"), r.URL.EscapedPath()
		go func() {
			f.err = s.fetchFromPeers(fctx, path, authz, ref, sum)
			cancel()
			imageFetches.Lock()
			if imageFetches.m[key] == f {
				delete(imageFetches.m, key)
			}
			imageFetches.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	imageFetches.Unlock()

	select {
	case <-f.done:
		return f.err
	case <-r.Context().Done():
		imageFetches.Lock()
		if f.waiters--; f.waiters == 0 {
			// Nobody wants it any more; a later miss starts afresh.
			f.cancel()
			if imageFetches.m[key] == f {
				delete(imageFetches.m, key)
			}
		}
		imageFetches.Unlock()
		return r.Context().Err()
	}
}

// fetchFromPeers tries the servers recorded as holding sum, in random
// order, until one of them delivers the right bytes.
func (s *Server) fetchFromPeers(ctx context.Context, path, authz, ref, sum string) error {
	sumHex := strings.TrimPrefix(sum, "sha256:")
	resp, err := s.etcd.Get(ctx, imageHolderPrefix(sumHex), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("looking up the servers that hold the content of %s: %w", ref, err)
	}
	var peers []string
	for _, kv := range resp.Kvs {
		if u := string(kv.Value); u != s.cfg.AdvertiseURL && u != "" {
			peers = append(peers, u)
		}
	}
	if len(peers) == 0 {
		return &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: fmt.Sprintf("the content (%s) of %s is not on this server (%s), and no other server of the control plane holds it: upload it again with `hearth image upload`",
				sum, ref, s.cfg.AdvertiseURL)}
	}
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })

	c := s.peerClient()
	defer c.CloseIdleConnections()
	var tried []string
	allMissing := true
	for _, peer := range peers {
		start := time.Now()
		n, err := s.fetchFromPeer(ctx, c, peer, path, authz, sumHex)
		if err == nil {
			slog.Info("fetched uploaded image content from a peer", "image", ref, "checksum", sum, "peer", peer,
				"bytes", n, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		slog.Warn("fetching uploaded image content from a peer", "image", ref, "checksum", sum, "peer", peer, "err", err)
		var pe *peerStatusError
		if !errors.As(err, &pe) || pe.code != http.StatusNotFound {
			allMissing = false
		}
		tried = append(tried, peer+": "+err.Error())
	}
	st := &api.Status{Kind: "Status", Code: http.StatusServiceUnavailable, Reason: api.ReasonUnavailable}
	if allMissing {
		st.Code, st.Reason = http.StatusNotFound, api.ReasonNotFound
	}
	st.Message = fmt.Sprintf("the content (%s) of %s is not on this server (%s), and no server recorded as holding it could provide it (%s)",
		sum, ref, s.cfg.AdvertiseURL, strings.Join(tried, "; "))
	return st
}

// peerClient makes requests to the other servers of the control plane,
// trusting only the cluster CA and never following redirects (the
// caller's token goes with each request).
func (s *Server) peerClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.CertPEM)
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			DisableCompression:    true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// peerStatusError is a peer's answer other than 200.
type peerStatusError struct {
	code int
	msg  string
}

func (e *peerStatusError) Error() string { return e.msg }

// fetchFromPeer downloads path from peer into a hidden file in the image
// directory and, if its checksum is sumHex, puts it in place and records
// this server as a holder.
func (s *Server) fetchFromPeer(ctx context.Context, c *http.Client, peer, path, authz, sumHex string) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	watchdog := time.AfterFunc(peerFetchStall, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peer, "/")+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", authz)
	req.Header.Set(peerFetchHeader, "1")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.Do(req)
	if err != nil {
		if stalled.Load() {
			return 0, fmt.Errorf("no answer in %s", peerFetchStall)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the peer's and the path, known
		}
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		var st api.Status
		if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(b, &st) == nil && st.Message != "" {
			msg += " (" + st.Message + ")"
		}
		return 0, &peerStatusError{code: resp.StatusCode, msg: msg}
	}

	dir := s.imageDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	// A copy takes the disk etcd lives on like an upload does.
	if err := s.checkUploadRoom("a copy of sha256:"+sumHex, max(resp.ContentLength, 0)); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	body := &watchedReader{r: resp.Body, watchdog: watchdog}
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), body, make([]byte, 1<<20))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if stalled.Load() {
			err = fmt.Errorf("no data for %s", peerFetchStall)
		}
		return n, fmt.Errorf("broke off after %d bytes: %w", n, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sumHex {
		return n, fmt.Errorf("sent %d bytes with checksum sha256:%s, not the image's sha256:%s; discarded", n, got, sumHex)
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return n, err
	}

	imageContentMu.Lock()
	defer imageContentMu.Unlock()
	if err := os.Rename(tmp.Name(), filepath.Join(dir, sumHex)); err != nil {
		return n, err
	}
	if err := s.recordImageHolder(ctx, sumHex); err != nil {
		// The copy serves this download; the next sweep records it.
		slog.Warn("recording a copy of uploaded image content", "checksum", "sha256:"+sumHex, "err", err)
	}
	return n, nil
}

// watchedReader pushes a watchdog back on every read that brings bytes.
type watchedReader struct {
	r        io.Reader
	watchdog *time.Timer
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.watchdog.Reset(peerFetchStall)
	}
	return n, err
}
