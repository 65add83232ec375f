package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// maxBody bounds a request body: objects are small; uploads have their own path.
const maxBody = 8 << 20

// target is what a request's path addresses.
type target struct {
	kind       *api.KindInfo
	tenant     string
	allTenants bool // a collection path of a tenant kind without a tenant
	name       string
	status     bool
}

func (t target) request(v auth.Verb) auth.Request {
	return auth.Request{Verb: v, Kind: t.kind, Tenant: t.tenant, AllTenants: t.allTenants, Name: t.name}
}

// objectRoute serves the objects of kind k at a route: its collection,
// an object (path value name), or an object's status.
func (s *Server) objectRoute(k *api.KindInfo, status bool) func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		t := target{kind: k, tenant: r.PathValue("tenant"), name: r.PathValue("name"), status: status}
		t.allTenants = t.tenant == "" && k.Scope == api.TenantScoped
		s.serveObjects(w, r, p, t)
		return nil
	}
}

// serveObjects handles every verb on every kind.
func (s *Server) serveObjects(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) {
	var err error
	if r.Method != http.MethodGet {
		if r, err = withDryRun(r); err != nil {
			writeError(w, err)
			return
		}
	}
	switch {
	case t.name == "" && r.Method == http.MethodGet:
		if r.URL.Query().Get("watch") == "1" || r.URL.Query().Get("watch") == "true" {
			err = s.watch(w, r, p, t)
		} else {
			err = s.list(w, r, p, t)
		}
	case t.name == "" && r.Method == http.MethodPost:
		// A create's reads form one read session (store/reads.go): the
		// first is linearizable, the rest need not wait for etcd's
		// raft loop. A VM's is timed by phase (createphases.go).
		ctx := store.WithReadSession(r.Context())
		ctx, clock := s.createPhases.start(ctx, t.kind.Kind == "VirtualMachine")
		err = s.create(w, r.WithContext(ctx), p, t)
		clock.lap("answer")
	case t.name != "" && r.Method == http.MethodGet:
		err = s.get(w, r, p, t)
	case t.name != "" && r.Method == http.MethodPut:
		err = s.replace(w, r, p, t)
	case t.name != "" && r.Method == http.MethodPatch:
		err = s.patch(w, r, p, t)
	case t.name != "" && !t.status && r.Method == http.MethodDelete:
		err = s.delete(w, r, p, t)
	default:
		err = &api.Status{Kind: "Status", Code: http.StatusMethodNotAllowed, Reason: api.ReasonBadRequest, Message: r.Method + " is not allowed on " + r.URL.Path}
	}
	if err != nil {
		writeError(w, err)
	}
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	req := t.request(auth.Get)
	if t.kind.Confidential && p.Host != "" {
		keyring, err := s.poolKeyring(r.Context(), t.name)
		if err != nil {
			return err
		}
		req.PoolKeyring = keyring
	}
	if err := auth.Authorize(p, req); err != nil {
		return err
	}
	obj, err := s.store.Get(r.Context(), t.kind, t.tenant, t.name)
	if err != nil {
		return err
	}
	if req.PoolKeyring {
		// Authorize allowed this host this Secret, whole: the key is
		// what it asked for.
		writeJSON(w, http.StatusOK, obj)
		return nil
	}
	if !s.sees(r.Context(), p, t.kind, obj) {
		return api.NewNotFound(t.kind.Kind, t.tenant, t.name)
	}
	writeJSON(w, http.StatusOK, shown(p, obj))
	return nil
}

// poolKeyring reports whether a StoragePool names the Secret name as its
// keyringSecret.
func (s *Server) poolKeyring(ctx context.Context, name string) (bool, error) {
	pk, err := api.KindByName("StoragePool")
	if err != nil {
		return false, err
	}
	pools, _, err := s.store.List(ctx, pk, store.KindPrefix(pk), nil)
	if err != nil {
		return false, err
	}
	for _, o := range pools {
		if rbd := o.(*api.StoragePool).Spec.RBD; rbd != nil && rbd.KeyringSecret != nil && rbd.KeyringSecret.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// prefixes returns the etcd prefixes a list or watch by p reads.
func prefixes(p *auth.Principal, t target) []string {
	if t.allTenants || (t.kind.Scope == api.TenantOptional && t.tenant == "" && p.GlobalReader()) {
		return []string{store.KindPrefix(t.kind)}
	}
	out := []string{store.TenantPrefix(t.kind, t.tenant)}
	if t.kind.Scope == api.TenantOptional && t.kind.SharedReadable && t.tenant != "" {
		out = append(out, store.TenantPrefix(t.kind, ""))
	}
	return out
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	if err := auth.Authorize(p, t.request(auth.List)); err != nil {
		return err
	}
	filter, err := parseFilter(r, t.kind)
	if err != nil {
		return err
	}
	if auth.HostScoped(p, t.kind) {
		return s.hostList(w, r, p, t, filter)
	}
	// A caller who sees every object as stored, unfiltered by fields,
	// gets the stored bytes: no decode and encode per object.
	if r.URL.Query().Get("fieldSelector") == "" && p.GlobalReader() && (seesCredentials(p) || !hasCredentials(t.kind)) &&
		(!p.HostCredential() || t.kind != s.userKind) && (!t.kind.Confidential || seesCredentials(p)) {
		return s.listRaw(w, r, p, t, filter)
	}
	var items []api.Object
	var rev int64
	for _, prefix := range prefixes(p, t) {
		objs, rv, err := s.store.ListAt(r.Context(), t.kind, prefix, filter.labels, rev)
		if err != nil {
			return err
		}
		rev = rv
		for _, o := range objs {
			if !auth.VisibleTo(p, o) {
				continue
			}
			// Field selectors see what the caller is shown, so a selector
			// on a redacted field cannot test guesses of its value.
			if o = shown(p, o); filter.fields(o) {
				items = append(items, o)
			}
		}
	}
	if items == nil {
		items = []api.Object{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"apiVersion": api.APIVersion,
		"kind":       t.kind.Kind + "List",
		"metadata":   api.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
		"items":      items,
	})
	return nil
}

// listRaw writes a list of stored objects as they are (see Store.ListRaw).
// Only callers who may read every object of the kind as stored come here:
// auth.VisibleTo and shown would pass each unchanged.
func (s *Server) listRaw(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target, f filter) error {
	// Written as etcd is read, a page at a time (Store.ListStoredPages), all
	// at the revision of the first page, which the list's metadata
	// names before any object.
	var bw *bufio.Writer
	n := 0
	var rev int64
	for _, prefix := range prefixes(p, t) {
		var err error
		rev, err = s.store.ListStoredPages(r.Context(), t.kind, prefix, f.labels, rev, func(rev int64, items []store.Stored) error {
			if bw == nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				bw = bufio.NewWriterSize(w, 64<<10)
				fmt.Fprintf(bw, `{"apiVersion":%q,"kind":%q,"metadata":{"resourceVersion":%q},"items":[`, api.APIVersion, t.kind.Kind+"List", strconv.FormatInt(rev, 10))
			}
			for _, item := range items {
				if n > 0 {
					bw.WriteByte(',')
				}
				n++
				if _, err := item.WriteTo(bw); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil && bw == nil {
			return err
		}
		if err != nil {
			// Too late for an error status: the list ends unfinished,
			// which no client takes for a whole one.
			slog.Warn("list ended half-way", "kind", t.kind.Kind, "err", err)
			return nil
		}
	}
	if bw == nil {
		return api.NewInternal("listing %s: no prefix to read", t.kind.Kind)
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// readObject decodes a request body (JSON, or YAML for people with curl)
// as an object of the target's kind, in the target's tenant.
func readObject(r *http.Request, t target) (api.Object, error) {
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	obj := t.kind.New()
	if err := api.DecodeInto(data, obj); err != nil {
		// Name the object in the error even though it did not decode.
		var named struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		_ = json.Unmarshal(data, &named)
		return nil, invalid(t, named.Metadata.Name, err)
	}
	tm, m := obj.GetTypeMeta(), obj.GetMetadata()
	var es api.FieldErrors
	if tm.Kind != "" && tm.Kind != t.kind.Kind {
		es.Add("kind", "%q does not match the URL, which is for %s", tm.Kind, t.kind.Kind)
	}
	if tm.APIVersion == "" {
		tm.APIVersion = api.APIVersion
	}
	tm.Kind = t.kind.Kind
	if t.kind.Scope != api.ClusterScoped {
		if m.Tenant == "" {
			m.Tenant = t.tenant
		} else if m.Tenant != t.tenant {
			es.Add("metadata.tenant", "%q does not match the URL's tenant %q", m.Tenant, t.tenant)
		}
	}
	if t.name != "" && m.Name != t.name {
		if m.Name == "" {
			m.Name = t.name
		} else {
			es.Add("metadata.name", "%q does not match the URL's name %q", m.Name, t.name)
		}
	}
	if len(es) > 0 {
		return nil, api.NewInvalid(t.kind.Kind, m.Name, es)
	}
	phaseClockOf(r.Context()).lap("read")
	return obj, nil
}

func readBody(r *http.Request) ([]byte, error) {
	data, err := readAllSized(io.LimitReader(r.Body, maxBody+1), r.ContentLength)
	if err != nil {
		return nil, api.NewBadRequest("reading the request body: %v", err)
	}
	if len(data) > maxBody {
		return nil, api.NewBadRequest("the request body is larger than %d bytes", maxBody)
	}
	if ct := r.Header.Get("Content-Type"); strings.Contains(ct, "yaml") {
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return nil, api.NewBadRequest("the body is not valid YAML: %v", err)
		}
	}
	return data, nil
}

// readAllSized reads rd to its end as io.ReadAll does, into one buffer
// of size+1 bytes when the size is known (a request's Content-Length,
// which Go's clients send): io.ReadAll starts at 512 bytes and grows,
// and for a VM's status written by its agent that was the largest of
// the write's allocations in the server (BenchmarkVMStatusWrite). The
// extra byte is where the end is seen; a body longer than it said grows
// the buffer as io.ReadAll would.
func readAllSized(rd io.Reader, size int64) ([]byte, error) {
	n := 512
	if size > 0 && size < maxBody {
		n = int(size) + 1
	}
	b := make([]byte, 0, n)
	for {
		m, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

func invalid(t target, name string, err error) error {
	var es api.FieldErrors
	if errors.As(err, &es) {
		return api.NewInvalid(t.kind.Kind, name, es)
	}
	return err
}

// clearStatus empties an object's status: only /status writes it.
func clearStatus(obj api.Object) {
	st := reflect.ValueOf(obj.StatusAny()).Elem()
	st.Set(reflect.Zero(st.Type()))
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	if t.allTenants {
		return api.NewBadRequest("%s are created in a tenant: POST to %s", t.kind.Plural, api.CollectionPath(t.kind, "TENANT"))
	}
	obj, err := readObject(r, t)
	if err != nil {
		return err
	}
	req := t.request(auth.Create)
	req.Name, req.New = obj.GetMetadata().Name, obj
	if ev, ok := obj.(*api.Event); ok && p.HostCredential() {
		if req.Involved, err = s.involvedObject(r.Context(), ev.Spec.InvolvedObject); err != nil {
			return err
		}
	}
	if err := auth.Authorize(p, req); err != nil {
		return err
	}
	if es := api.Prepare(obj, nil); len(es) > 0 {
		return api.NewInvalid(t.kind.Kind, obj.GetMetadata().Name, es)
	}
	clearStatus(obj)
	m := obj.GetMetadata()
	m.Generation = 1 // as the store writes it; the status may record it
	api.FollowSpec(obj, nil, time.Now())
	if m.DeletionTimestamp != nil {
		return api.NewInvalid(t.kind.Kind, m.Name, api.FieldErrors{{Field: "metadata.deletionTimestamp", Detail: "is set by the server when an object is deleted"}})
	}
	for attempt := 0; ; attempt++ {
		// The admission checks guard the write (store.Guard): if what
		// they read changes before it commits, they run again.
		ctx := store.WithGuards(r.Context())
		if err := s.admit(ctx, p, obj, nil); err != nil {
			return err
		}
		created, err := s.store.Create(ctx, obj)
		if errors.Is(err, store.ErrGuardChanged) {
			if attempt < 16 {
				continue
			}
			return api.NewUnavailable("too many writes at once in tenant %s; try again", m.Tenant)
		}
		if err != nil {
			return err
		}
		s.writeWarnings(r.Context(), w, p, created)
		writeJSON(w, http.StatusCreated, shown(p, created))
		return nil
	}
}

// involvedObject reads the object an event is about, or returns nil if
// there is none (or the reference is not one an object could have).
func (s *Server) involvedObject(ctx context.Context, ref api.ObjectReference) (api.Object, error) {
	k, err := api.KindByName(ref.Kind)
	if err != nil || ref.Name == "" || (k.Scope == api.ClusterScoped && ref.Tenant != "") || (k.Scope == api.TenantScoped && ref.Tenant == "") {
		return nil, nil
	}
	obj, err := s.store.Get(ctx, k, ref.Tenant, ref.Name)
	if api.IsNotFound(err) {
		return nil, nil
	}
	return obj, err
}

// admit runs the checks that need other objects or the caller: the tenant
// exists, and the admission plugins (quotas, fetched URLs) agree.
func (s *Server) admit(ctx context.Context, p *auth.Principal, obj, old api.Object) error {
	m := obj.GetMetadata()
	if m.Tenant != "" && old == nil {
		if _, ok := s.tenants.Lookup(ctx, m.Tenant); !ok {
			return api.NewInvalid(obj.GetTypeMeta().Kind, m.Name, api.FieldErrors{{Field: "metadata.tenant", Detail: "tenant " + strconv.Quote(m.Tenant) + " does not exist"}})
		}
	}
	for _, a := range s.admitters {
		if err := a(ctx, p, obj, old); err != nil {
			return err
		}
	}
	phaseClockOf(ctx).lap("admit")
	return nil
}

// precondition reads the resourceVersion a write is conditional on.
func precondition(obj api.Object) (int64, error) {
	return store.ParseRV(obj.GetMetadata().ResourceVersion)
}

// mergeSpecUpdate builds the object to store from a client's full object
// (PUT, or a patched copy) and the stored one: the client owns spec,
// labels, annotations, finalizers and owners; the server owns identity,
// timestamps, generation and (outside /status) status.
func (s *Server) mergeSpecUpdate(ctx context.Context, p *auth.Principal, t target, in, cur api.Object) (api.Object, error) {
	req := t.request(auth.Update)
	req.Stored, req.New = cur, in
	if err := auth.Authorize(p, req); err != nil {
		return nil, err
	}
	next := api.DeepCopy(in)
	nm, cm := next.GetMetadata(), cur.GetMetadata()
	if es := api.Prepare(next, cur); len(es) > 0 {
		return nil, api.NewInvalid(t.kind.Kind, nm.Name, es)
	}
	if cm.DeletionTimestamp != nil {
		for _, f := range nm.Finalizers {
			if !cm.HasFinalizer(f) {
				return nil, api.NewInvalid(t.kind.Kind, nm.Name, api.FieldErrors{{Field: "metadata.finalizers", Detail: "cannot add " + strconv.Quote(f) + " to an object being deleted"}})
			}
		}
	}
	// Status is written only through /status.
	reflect.ValueOf(next.StatusAny()).Elem().Set(reflect.ValueOf(cur.StatusAny()).Elem())
	nm.Generation = cm.Generation
	specChanged := !api.SpecEqual(next, cur)
	if specChanged {
		nm.Generation++
	}
	nm.UpdateTimestamp, nm.DeletionTimestamp = cm.UpdateTimestamp, cm.DeletionTimestamp
	if specChanged {
		api.FollowSpec(next, cur, time.Now())
	}
	if !specChanged && metaEqual(nm, cm) {
		return nil, store.ErrUnchanged
	}
	if err := s.admit(ctx, p, next, cur); err != nil {
		return nil, err
	}
	return next, nil
}

func metaEqual(a, b *api.ObjectMeta) bool {
	return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) &&
		slices.Equal(a.Finalizers, b.Finalizers) && slices.Equal(a.OwnerReferences, b.OwnerReferences)
}

// mergeStatusUpdate takes only the status of in, keeping everything else
// as stored.
func mergeStatusUpdate(p *auth.Principal, t target, in, cur api.Object) (api.Object, error) {
	// A shallow copy of cur, not api.DeepCopy's encode and decode (every
	// status write of every VM comes here): cur is the update's own
	// (store.UpdateFunc), and only next's status, which is replaced
	// whole, differs from it.
	nv := reflect.New(reflect.TypeOf(cur).Elem())
	nv.Elem().Set(reflect.ValueOf(cur).Elem())
	next := nv.Interface().(api.Object)
	reflect.ValueOf(next.StatusAny()).Elem().Set(reflect.ValueOf(in.StatusAny()).Elem())
	req := t.request(auth.UpdateStatus)
	req.Stored, req.New = cur, next
	if err := auth.Authorize(p, req); err != nil {
		return nil, err
	}
	if v, ok := next.StatusAny().(api.Validator); ok {
		if es := v.Validate("status"); len(es) > 0 {
			return nil, api.NewInvalid(t.kind.Kind, t.name, es)
		}
	}
	return next, nil
}

func (s *Server) replace(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	in, err := readObject(r, t)
	if err != nil {
		return err
	}
	pre, err := precondition(in)
	if err != nil {
		return err
	}
	ctx := store.WithGuards(r.Context())
	out, err := s.store.Update(ctx, t.kind, t.tenant, t.name, pre, func(cur api.Object) (api.Object, error) {
		if t.status {
			return mergeStatusUpdate(p, t, in, cur)
		}
		return s.mergeSpecUpdate(ctx, p, t, in, cur)
	})
	if err != nil {
		return s.hideForbidden(r.Context(), p, t, err)
	}
	if !t.status {
		s.writeWarnings(r.Context(), w, p, out)
	}
	writeJSON(w, http.StatusOK, shown(p, out))
	return nil
}

// patch applies a JSON merge patch (RFC 7386) to the stored object. A
// resourceVersion in the patch makes it conditional.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var patch map[string]any
	if err := json.Unmarshal(data, &patch); err != nil {
		return api.NewBadRequest("a merge patch must be a JSON object: %v", err)
	}
	var pre int64
	if md, ok := patch["metadata"].(map[string]any); ok {
		if rv, ok := md["resourceVersion"].(string); ok {
			if pre, err = store.ParseRV(rv); err != nil {
				return err
			}
		}
	}
	ctx := store.WithGuards(r.Context())
	out, err := s.store.Update(ctx, t.kind, t.tenant, t.name, pre, func(cur api.Object) (api.Object, error) {
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		var doc any
		if err := json.Unmarshal(curJSON, &doc); err != nil {
			return nil, err
		}
		merged, err := json.Marshal(mergePatch(doc, patch))
		if err != nil {
			return nil, err
		}
		in := t.kind.New()
		if err := api.DecodeInto(merged, in); err != nil {
			return nil, invalid(t, t.name, err)
		}
		if t.status {
			return mergeStatusUpdate(p, t, in, cur)
		}
		return s.mergeSpecUpdate(ctx, p, t, in, cur)
	})
	if err != nil {
		return s.hideForbidden(r.Context(), p, t, err)
	}
	if !t.status {
		s.writeWarnings(r.Context(), w, p, out)
	}
	writeJSON(w, http.StatusOK, shown(p, out))
	return nil
}

// mergePatch applies an RFC 7386 merge patch: objects merge key by key,
// null deletes, anything else replaces.
func mergePatch(doc any, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	dm, ok := doc.(map[string]any)
	if !ok {
		dm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(dm, k)
		} else {
			dm[k] = mergePatch(dm[k], v)
		}
	}
	return dm
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	pre, err := store.ParseRV(r.URL.Query().Get("resourceVersion"))
	if err != nil {
		return err
	}
	obj, deleted, err := s.store.Delete(r.Context(), t.kind, t.tenant, t.name, pre, func(cur api.Object) error {
		req := t.request(auth.Delete)
		req.Stored = cur
		return auth.Authorize(p, req)
	})
	if err != nil {
		return s.hideForbidden(r.Context(), p, t, err)
	}
	code := http.StatusOK
	if !deleted {
		code = http.StatusAccepted // waiting on finalizers
	}
	writeJSON(w, code, shown(p, obj))
	return nil
}

// hideForbidden keeps a write to an object p may not even read from
// telling p whether it exists: both answers are the same Forbidden.
func (s *Server) hideForbidden(ctx context.Context, p *auth.Principal, t target, err error) error {
	if api.IsNotFound(err) {
		if aerr := auth.Authorize(p, t.request(auth.Get)); aerr != nil {
			return aerr
		}
	}
	return err
}
