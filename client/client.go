// Package client is the one Go client of the Hearth API. The CLI, the
// agents, the server's own controllers and the tests all use it.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Client talks to one Hearth server with one credential.
type Client struct {
	base   string
	token  string
	http   *http.Client
	stream *http.Client // no overall timeout, for watches
	// Tenant is the default tenant for tenant-scoped calls given "".
	Tenant string
	// dryRun makes writes dry runs (see DryRun).
	dryRun bool
	// warn receives the server's warnings (see WithWarnings).
	warn func(string)
	// writes holds a token for each write in flight, if the client
	// limits them (LimitWrites, writelimit.go).
	writes chan struct{}
}

// DryRun returns a copy of the client whose creates, updates, patches and
// deletes are dry runs: the server runs every check a real write would
// (authorization, validation, admission such as quotas) and answers as it
// would, but writes nothing. Reads are unaffected.
func (c *Client) DryRun() *Client {
	cc := *c
	cc.dryRun = true
	return &cc
}

// WithWarnings returns a copy of the client that calls warn with each
// warning the server sends with an answer (a name in a spec that names no
// object, say). A client without one drops them.
func (c *Client) WithWarnings(warn func(msg string)) *Client {
	cc := *c
	cc.warn = warn
	return &cc
}

// writePath adds the dry-run parameter to the path of a write.
func (c *Client) writePath(path string) string {
	if !c.dryRun {
		return path
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + "dryRun=All"
}

// warnings hands the Warning headers of an answer to the handler.
func (c *Client) warnings(h http.Header) {
	if c.warn == nil {
		return
	}
	for _, v := range h.Values("Warning") {
		if text, ok := parseWarning(v); ok {
			c.warn(text)
		}
	}
}

// parseWarning reads a Warning header's value, `299 - "text"` (RFC 7234;
// a date may follow the text), and returns the text.
func parseWarning(v string) (text string, ok bool) {
	_, rest, found := strings.Cut(v, " - ")
	if !found {
		return "", false
	}
	i := strings.LastIndexByte(rest, '"')
	if !strings.HasPrefix(rest, `"`) || i < 1 {
		return "", false
	}
	var b strings.Builder
	for j := 1; j < i; j++ {
		if rest[j] == '\\' && j+1 < i {
			j++
		}
		b.WriteByte(rest[j])
	}
	return b.String(), true
}

// New returns a client for a context.
func New(c *Context) (*Client, error) {
	if c.Server == "" {
		return nil, errors.New("the context has no server URL")
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CertificateAuthority != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.CertificateAuthority)) {
			return nil, fmt.Errorf("context %q: certificateAuthority is not a PEM certificate", c.Name)
		}
		tlsConf.RootCAs = pool
	}
	tr := newTransport(tlsConf)
	return &Client{
		base:   strings.TrimRight(c.Server, "/"),
		token:  c.Token,
		http:   &http.Client{Transport: tr, Timeout: 60 * time.Second},
		stream: &http.Client{Transport: tr},
		Tenant: c.Tenant,
	}, nil
}

// FromConfig loads the config (flag, HEARTH_CONFIG or default) and returns
// a client for its current context, or the named one.
func FromConfig(path, contextName string) (*Client, error) {
	cfg, err := LoadConfig(ConfigPath(path))
	if err != nil {
		return nil, err
	}
	ctx, err := cfg.Current(contextName)
	if err != nil {
		return nil, err
	}
	return New(ctx)
}

// Close closes the client's connection to the server once no request or
// watch is using it, rather than leaving it open until it idles out: for
// a client that is done (a join's, a command's).
func (c *Client) Close() { c.stream.CloseIdleConnections() }

// Server returns the server URL.
func (c *Client) Server() string { return c.base }

// Do sends a request and decodes a JSON answer into out (unless nil). API
// errors come back as *api.Status.
func (c *Client) Do(ctx context.Context, method, path string, body any, out any) error {
	resp, err := c.send(ctx, c.http, method, path, "application/json", body)
	if err != nil {
		return err
	}
	return decodeBody(resp, out)
}

// decodeBody decodes a JSON answer and reads the body to its end, which
// lets the transport reuse the connection instead of paying for a new TLS
// handshake on the next request.
func decodeBody(resp *http.Response, out any) error {
	defer resp.Body.Close()
	var err error
	if out != nil {
		var data []byte
		data, err = io.ReadAll(resp.Body)
		if err != nil || !api.UnmarshalFast(data, out) {
			err = json.NewDecoder(io.MultiReader(bytes.NewReader(data), errReader{err})).Decode(out)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return err
}

func (c *Client) send(ctx context.Context, hc *http.Client, method, path, contentType string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = bytes.NewReader(b)
		case io.Reader:
			rd = b // streamed as it is read (uploads)
		default:
			data, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(data)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	done, err := c.writeTurn(ctx, method)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if done != nil {
			done()
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.base, err)
	}
	resp.Body = endsTurn(resp.Body, done)
	c.warnings(resp.Header)
	if resp.StatusCode >= 400 {
		return nil, errorOf(resp, method, path)
	}
	return resp, nil
}

// errorOf reads an error answer, closes it, and returns it as the
// server's *api.Status.
func errorOf(resp *http.Response, method, path string) error {
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var st api.Status
	if json.Unmarshal(data, &st) == nil && st.Message != "" {
		return &st
	}
	return &api.Status{Kind: "Status", Code: resp.StatusCode, Reason: api.ReasonInternal,
		Message: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))}
}

// tenantFor picks the tenant a call addresses for kind k.
func (c *Client) tenantFor(k *api.KindInfo, tenant string) string {
	if k.Scope == api.ClusterScoped {
		return ""
	}
	if tenant == "" && k.Scope == api.TenantScoped {
		return c.Tenant
	}
	return tenant
}

func kindOf(obj api.Object) (*api.KindInfo, error) {
	return api.KindByName(obj.GetTypeMeta().Kind)
}

// Get reads one object.
func (c *Client) Get(ctx context.Context, kind, tenant, name string) (api.Object, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, err
	}
	obj := k.New()
	return obj, c.Do(ctx, http.MethodGet, api.ObjectPath(k, c.tenantFor(k, tenant), name), nil, obj)
}

// ListOptions narrow a list or watch.
type ListOptions struct {
	LabelSelector string
	FieldSelector string
	// AllTenants lists a tenant-scoped kind across every tenant.
	AllTenants bool
	// ResourceVersion starts a watch after this revision.
	ResourceVersion string
}

func (o ListOptions) query(watch bool) string {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.FieldSelector != "" {
		q.Set("fieldSelector", o.FieldSelector)
	}
	if watch {
		q.Set("watch", "1")
		if o.ResourceVersion != "" {
			q.Set("resourceVersion", o.ResourceVersion)
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func (c *Client) collection(k *api.KindInfo, tenant string, o ListOptions) string {
	if o.AllTenants {
		tenant = ""
	} else {
		tenant = c.tenantFor(k, tenant)
	}
	return api.CollectionPath(k, tenant)
}

// List reads the objects of a kind and the resourceVersion to watch from.
func (c *Client) List(ctx context.Context, kind, tenant string, o ListOptions) ([]api.Object, string, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.send(ctx, c.http, http.MethodGet, c.collection(k, tenant, o)+o.query(false), "", nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	items, rv, err := readList(resp.Body, k)
	if err != nil {
		return nil, "", fmt.Errorf("reading the list of %s: %w", k.Plural, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return items, rv, nil
}

// decodeList reads a list answer, {"metadata":…,"items":[…]}, decoding
// each item straight into its kind as it comes: a list of every VM is
// tens of megabytes, which decoding into raw items first and then each
// item again would read twice and hold whole.
func decodeList(dec *json.Decoder, k *api.KindInfo) ([]api.Object, string, error) {
	delim := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); !ok || d != want {
			return fmt.Errorf("got %v where %v was expected", tok, want)
		}
		return nil
	}
	if err := delim('{'); err != nil {
		return nil, "", err
	}
	var meta api.ListMeta
	out := []api.Object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, "", err
		}
		switch tok {
		case "metadata":
			if err := dec.Decode(&meta); err != nil {
				return nil, "", fmt.Errorf("metadata: %w", err)
			}
		case "items":
			tok, err := dec.Token()
			if err != nil {
				return nil, "", fmt.Errorf("items: %w", err)
			}
			if tok == nil {
				continue // null: no items
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return nil, "", fmt.Errorf("items: got %v where [ was expected", tok)
			}
			for dec.More() {
				obj := k.New()
				if err := dec.Decode(obj); err != nil {
					return nil, "", fmt.Errorf("items[%d]: %w", len(out), err)
				}
				out = append(out, obj)
			}
			if err := delim(']'); err != nil {
				return nil, "", fmt.Errorf("items: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, "", fmt.Errorf("%v: %w", tok, err)
			}
		}
	}
	return out, meta.ResourceVersion, delim('}')
}

// Create creates an object and returns it as stored.
func (c *Client) Create(ctx context.Context, obj api.Object) (api.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	out := k.New()
	m := obj.GetMetadata()
	return out, c.Do(ctx, http.MethodPost, c.writePath(api.CollectionPath(k, c.tenantFor(k, m.Tenant))), obj, out)
}

// Update replaces an object's spec and metadata; with a resourceVersion
// set it fails with a Conflict if the object changed since.
func (c *Client) Update(ctx context.Context, obj api.Object) (api.Object, error) {
	return c.put(ctx, obj, "")
}

// UpdateStatus replaces an object's status.
func (c *Client) UpdateStatus(ctx context.Context, obj api.Object) (api.Object, error) {
	return c.put(ctx, obj, "/status")
}

func (c *Client) put(ctx context.Context, obj api.Object, sub string) (api.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	m := obj.GetMetadata()
	out := k.New()
	return out, c.Do(ctx, http.MethodPut, c.writePath(api.ObjectPath(k, c.tenantFor(k, m.Tenant), m.Name)+sub), obj, out)
}

// Patch applies a JSON merge patch to an object (status=true: to its status).
func (c *Client) Patch(ctx context.Context, kind, tenant, name string, patch any, status bool) (api.Object, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, err
	}
	path := api.ObjectPath(k, c.tenantFor(k, tenant), name)
	if status {
		path += "/status"
	}
	resp, err := c.send(ctx, c.http, http.MethodPatch, c.writePath(path), "application/merge-patch+json", patch)
	if err != nil {
		return nil, err
	}
	out := k.New()
	return out, decodeBody(resp, out)
}

// Delete deletes an object. It returns the object as deleted, or as marked
// for deletion while finalizers remain.
func (c *Client) Delete(ctx context.Context, kind, tenant, name string) (api.Object, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, err
	}
	out := k.New()
	return out, c.Do(ctx, http.MethodDelete, c.writePath(api.ObjectPath(k, c.tenantFor(k, tenant), name)), nil, out)
}

// Event is one change seen by a watch.
type Event struct {
	Type   string // ADDED, MODIFIED, DELETED, BOOKMARK
	Object api.Object
	// ResourceVersion is where a resumed watch continues from.
	ResourceVersion string
}

// WatchOnce streams changes from one HTTP request until it ends. The
// channel closes at the end; the error function then says why (nil for a
// clean end, a Gone Status when the resourceVersion was compacted).
func (c *Client) WatchOnce(ctx context.Context, kind, tenant string, o ListOptions) (<-chan Event, func() error, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.send(ctx, c.stream, http.MethodGet, c.collection(k, tenant, o)+o.query(true), "", nil)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan Event, 16)
	var werr error
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var raw struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			if err := api.Unmarshal(sc.Bytes(), &raw); err != nil {
				werr = fmt.Errorf("watch: bad event: %w", err)
				return
			}
			if raw.Type == "ERROR" {
				var st api.Status
				_ = json.Unmarshal(raw.Object, &st)
				werr = &st
				return
			}
			obj := k.New()
			if err := api.Unmarshal(raw.Object, obj); err != nil {
				werr = fmt.Errorf("watch: bad object: %w", err)
				return
			}
			ev := Event{Type: raw.Type, ResourceVersion: obj.GetMetadata().ResourceVersion}
			if raw.Type != "BOOKMARK" {
				ev.Object = obj
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil && ctx.Err() == nil {
			werr = err
		}
	}()
	return out, func() error { return werr }, nil
}

// WhoAmI describes the caller.
func (c *Client) WhoAmI(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	return out, c.Do(ctx, http.MethodGet, api.PathPrefix+"/whoami", nil, &out)
}

// Bind binds several VirtualMachines to hosts in one request (see
// api.BindingRequest): out.Items[i] says what became of items[i], each on
// its own. The error is the request's (none reached the server, or it
// refused them all).
func (c *Client) Bind(ctx context.Context, items []api.BindingItem) (api.BindingResponse, error) {
	var out api.BindingResponse
	if err := c.Do(ctx, http.MethodPost, api.BindingsPath, api.BindingRequest{Items: items}, &out); err != nil {
		return out, err
	}
	if len(out.Items) != len(items) {
		return out, fmt.Errorf("the server answered %d bindings for %d asked", len(out.Items), len(items))
	}
	return out, nil
}

// RenewHostLease renews the lease of host (the caller's own Host) on the
// server, which writes nothing to do it (see the server's host leases).
func (c *Client) RenewHostLease(ctx context.Context, host string) (api.HostLeaseRenewal, error) {
	var out api.HostLeaseRenewal
	err := c.Do(ctx, http.MethodPost, api.HostLeasePath(host), nil, &out)
	return out, err
}
