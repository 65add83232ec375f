package openapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// decoded returns the document as a client sees it: marshalled and read
// back, so the tests check the JSON and not the Go values.
func decoded(t *testing.T) map[string]any {
	t.Helper()
	b, err := json.Marshal(Document("v1.2.3"))
	if err != nil {
		t.Fatalf("marshal document: %v", err)
	}
	if !json.Valid(b) {
		t.Fatal("document is not valid JSON")
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("unmarshal document: %v", err)
	}
	return doc
}

// dig follows keys into nested objects, failing the test where one is missing.
func dig(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for i, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is a %T, not an object", strings.Join(keys[:i], "."), v)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("%s is missing", strings.Join(keys[:i+1], "."))
		}
	}
	return v
}

func schemasOf(t *testing.T, doc map[string]any) map[string]any {
	return dig(t, doc, "components", "schemas").(map[string]any)
}

// refOf is a schema's $ref, also when a description wraps it in allOf.
func refOf(schema any) any {
	m, _ := schema.(map[string]any)
	if all, ok := m["allOf"].([]any); ok && len(all) == 1 {
		m, _ = all[0].(map[string]any)
	}
	return m["$ref"]
}

// resolve follows a schema's $ref, if it has one, also when it is
// wrapped in allOf to carry a description.
func resolve(t *testing.T, doc map[string]any, schema any) map[string]any {
	t.Helper()
	m := schema.(map[string]any)
	if all, ok := m["allOf"].([]any); ok && len(all) == 1 {
		m = all[0].(map[string]any)
	}
	if r, ok := m["$ref"].(string); ok {
		return dig(t, schemasOf(t, doc), strings.TrimPrefix(r, schemaPrefix)).(map[string]any)
	}
	return m
}

func TestDocumentHasEveryKind(t *testing.T) {
	doc := decoded(t)
	if got := dig(t, doc, "openapi"); got != "3.0.3" {
		t.Errorf("openapi = %v, want 3.0.3", got)
	}
	if got := dig(t, doc, "info", "version"); got != "v1.2.3" {
		t.Errorf("info.version = %v, want v1.2.3", got)
	}
	schemas := schemasOf(t, doc)
	paths := dig(t, doc, "paths").(map[string]any)
	kinds := api.Kinds()
	if len(kinds) == 0 {
		t.Fatal("api.Kinds() is empty")
	}
	for _, k := range kinds {
		s, ok := schemas[k.Kind].(map[string]any)
		if !ok {
			t.Errorf("no schema for kind %s", k.Kind)
			continue
		}
		if s["description"] != k.Description {
			t.Errorf("%s description = %q, want %q", k.Kind, s["description"], k.Description)
		}
		if _, ok := schemas[k.Kind+"List"]; !ok {
			t.Errorf("no schema %sList", k.Kind)
		}
		// Cluster and TenantOptional kinds are listed at the top; tenant-
		// scoped ones there too, across tenants.
		list := api.PathPrefix + "/" + k.Plural
		if op, ok := dig(t, paths, list).(map[string]any)["get"].(map[string]any); !ok {
			t.Errorf("no GET %s", list)
		} else if got := dig(t, op, "responses", "200", "content", "application/json", "schema", "$ref"); got != schemaPrefix+k.Kind+"List" {
			t.Errorf("GET %s answers %v, want %sList", list, got, k.Kind)
		}
		if k.Scope != api.ClusterScoped {
			tenantList := api.PathPrefix + "/tenants/{tenant}/" + k.Plural
			if _, ok := dig(t, paths, tenantList).(map[string]any)["get"]; !ok {
				t.Errorf("no GET %s", tenantList)
			}
		}
	}
}

func TestPathsOfEachScope(t *testing.T) {
	// want lists, for a kind of each scope, the methods of each path.
	tests := []struct {
		scope api.Scope
		want  map[string]string
	}{
		{api.ClusterScoped, map[string]string{
			"/{plural}":               "get post",
			"/{plural}/{name}":        "delete get patch put",
			"/{plural}/{name}/status": "get patch put",
		}},
		{api.TenantScoped, map[string]string{
			"/{plural}":                                "get",
			"/tenants/{tenant}/{plural}":               "get post",
			"/tenants/{tenant}/{plural}/{name}":        "delete get patch put",
			"/tenants/{tenant}/{plural}/{name}/status": "get patch put",
			"/{plural}/{name}":                         "",
			"/{plural}/{name}/status":                  "",
		}},
		{api.TenantOptional, map[string]string{
			"/{plural}":                                "get post",
			"/{plural}/{name}":                         "delete get patch put",
			"/{plural}/{name}/status":                  "get patch put",
			"/tenants/{tenant}/{plural}":               "get post",
			"/tenants/{tenant}/{plural}/{name}":        "delete get patch put",
			"/tenants/{tenant}/{plural}/{name}/status": "get patch put",
		}},
	}
	doc := decoded(t)
	paths := dig(t, doc, "paths").(map[string]any)
	for _, tt := range tests {
		var k *api.KindInfo
		for _, kk := range api.Kinds() {
			if kk.Scope == tt.scope {
				k = kk
				break
			}
		}
		if k == nil {
			t.Logf("no %s kind to check", tt.scope)
			continue
		}
		for tmpl, want := range tt.want {
			path := api.PathPrefix + strings.ReplaceAll(tmpl, "{plural}", k.Plural)
			item, _ := paths[path].(map[string]any)
			var methods []string
			for _, m := range []string{"delete", "get", "patch", "post", "put"} {
				if _, ok := item[m]; ok {
					methods = append(methods, m)
				}
			}
			if got := strings.Join(methods, " "); got != want {
				t.Errorf("%s (%s): methods %q, want %q", path, k.Scope, got, want)
			}
		}
	}
}

func TestOperations(t *testing.T) {
	doc := decoded(t)
	paths := dig(t, doc, "paths").(map[string]any)
	ids := map[string]string{}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range paths {
		item := item.(map[string]any)
		for method, op := range item {
			if method == "parameters" {
				continue
			}
			op := op.(map[string]any)
			where := strings.ToUpper(method) + " " + path
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s has no operationId", where)
			} else if other, dup := ids[id]; dup {
				t.Errorf("%s and %s share operationId %s", where, other, id)
			}
			ids[id] = where
			if tags, _ := op["tags"].([]any); len(tags) == 0 {
				t.Errorf("%s has no tags", where)
			}
			responses := dig(t, op, "responses").(map[string]any)
			_, ok200 := responses["200"]
			_, ok201 := responses["201"]
			_, ok101 := responses["101"] // a websocket upgrade
			if !ok200 && !ok201 && !ok101 {
				t.Errorf("%s has no 200, 201 or 101 response", where)
			}
			for code, r := range responses {
				if code[0] != '2' && code[0] != '1' {
					if got := dig(t, r, "content", "application/json", "schema", "$ref"); got != schemaPrefix+"Status" {
						t.Errorf("%s %s answers %v, want a Status", where, code, got)
					}
				}
			}
			// Every {param} of the path is declared.
			declared := map[string]bool{}
			for _, params := range []any{item["parameters"], op["parameters"]} {
				ps, _ := params.([]any)
				for _, p := range ps {
					p := p.(map[string]any)
					if p["in"] == "path" {
						declared[p["name"].(string)] = true
					}
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s does not declare path parameter %s", where, m[1])
				}
			}
		}
	}

	for _, id := range []string{
		"listNetworks", "listNetworksAllTenants", "createNetwork", "readNetwork", "replaceNetwork",
		"patchNetwork", "deleteNetwork", "readNetworkStatus", "replaceNetworkStatus", "patchNetworkStatus",
		"listHosts", "createHost", "whoAmI", "createUserToken", "listUserTokens", "deleteUserToken",
		"createJoinToken", "listJoinTokens", "deleteJoinToken", "listHostTokens", "deleteHostToken", "joinHost", "checkHealth", "readVersion",
	} {
		if _, ok := ids[id]; !ok {
			t.Errorf("no operation %s", id)
		}
	}

	patch := dig(t, paths, api.PathPrefix+"/tenants/{tenant}/networks/{name}", "patch", "requestBody", "content").(map[string]any)
	if _, ok := patch["application/merge-patch+json"]; !ok {
		t.Errorf("PATCH network takes %v, want application/merge-patch+json", patch)
	}
	list := dig(t, paths, api.PathPrefix+"/tenants/{tenant}/networks", "get").(map[string]any)
	params := map[string]bool{}
	for _, p := range list["parameters"].([]any) {
		params[p.(map[string]any)["name"].(string)] = true
	}
	for _, want := range []string{"labelSelector", "watch", "resourceVersion"} {
		if !params[want] {
			t.Errorf("listNetworks has no %s parameter", want)
		}
	}
	if _, ok := dig(t, list, "responses").(map[string]any)["410"]; !ok {
		t.Error("listNetworks has no 410 response for a compacted watch")
	}

	// Every write of an object takes dryRun=All; spec writes may answer
	// with Warning headers.
	writes := 0
	for path, item := range paths {
		if !strings.Contains(path, "{name}") || strings.HasSuffix(path, "/content") || strings.HasSuffix(path, "/log") ||
			strings.HasSuffix(path, "/console") || strings.Contains(path, "/tokens") || strings.HasSuffix(path, "/heartbeat") ||
			strings.HasSuffix(path, "/migrationcert") {
			continue
		}
		for method, op := range item.(map[string]any) {
			if method == "get" || method == "parameters" {
				continue
			}
			writes++
			where := strings.ToUpper(method) + " " + path
			var dry map[string]any
			ps, _ := op.(map[string]any)["parameters"].([]any)
			for _, p := range ps {
				if p := p.(map[string]any); p["name"] == "dryRun" {
					dry = p
				}
			}
			if dry == nil {
				t.Errorf("%s takes no dryRun parameter", where)
				continue
			}
			if dry["in"] != "query" || !reflect.DeepEqual(dig(t, dry, "schema", "enum"), []any{"All"}) {
				t.Errorf("%s dryRun = %v, want a query parameter with the one value All", where, dry)
			}
			if method == "delete" || strings.HasSuffix(path, "/status") {
				continue
			}
			ok := dig(t, op, "responses", "200")
			dig(t, ok, "headers", "Warning", "schema")
		}
	}
	for _, create := range []string{api.PathPrefix + "/tenants/{tenant}/networks", api.PathPrefix + "/hosts"} {
		op := dig(t, paths, create, "post")
		found := false
		for _, p := range op.(map[string]any)["parameters"].([]any) {
			found = found || p.(map[string]any)["name"] == "dryRun"
		}
		if !found {
			t.Errorf("POST %s takes no dryRun parameter", create)
		}
		dig(t, op, "responses", "201", "headers", "Warning")
	}
	if writes < 100 {
		t.Errorf("checked dryRun on %d writes; the document lists too few", writes)
	}

	logParams := map[string]bool{}
	for _, p := range dig(t, paths, api.PathPrefix+"/tenants/{tenant}/virtualmachines/{name}/log", "get", "parameters").([]any) {
		logParams[p.(map[string]any)["name"].(string)] = true
	}
	for _, want := range []string{"follow", "tail", "tailLines"} {
		if !logParams[want] {
			t.Errorf("readVirtualMachineLog has no %s parameter", want)
		}
	}
}

// TestDescriptionsFromDocComments: fields and types carry their Go doc
// comments; a described reference keeps its $ref inside allOf.
func TestDescriptionsFromDocComments(t *testing.T) {
	doc := decoded(t)
	vm := dig(t, schemasOf(t, doc), "VirtualMachine", "properties").(map[string]any)
	spec := resolve(t, doc, vm["spec"])
	props := dig(t, spec, "properties").(map[string]any)
	if d, _ := dig(t, props, "host", "description").(string); !strings.HasPrefix(d, "Host runs the VM.") {
		t.Errorf("spec.host description = %q", d)
	}
	if got := dig(t, props, "host", "type"); got != "string" {
		t.Errorf("spec.host type = %v after describing it", got)
	}
	if d, _ := dig(t, props, "memory", "description").(string); !strings.HasPrefix(d, "Memory is the guest's RAM") {
		t.Errorf("spec.memory description = %q, want the field's, not Bytes'", d)
	}
	// cloudInit is a described struct: allOf its $ref.
	ci := dig(t, props, "cloudInit").(map[string]any)
	if d, _ := ci["description"].(string); !strings.HasPrefix(d, "CloudInit is handed to the guest") {
		t.Errorf("spec.cloudInit description = %q", d)
	}
	if got := dig(t, ci, "allOf").([]any); len(got) != 1 || got[0].(map[string]any)["$ref"] != schemaPrefix+"CloudInit" {
		t.Errorf("spec.cloudInit allOf = %v", got)
	}
	if d, _ := dig(t, schemasOf(t, doc), "VMBoot", "description").(string); d != "VMBoot says what the VM boots." {
		t.Errorf("VMBoot description = %q", d)
	}
	// Types of other packages get none.
	s := newSchemas()
	s.of(reflect.TypeFor[sample]())
	if _, ok := s.defs["sample"].(map[string]any)["description"]; ok {
		t.Error("a type outside the API got a description")
	}
}

func TestSecurity(t *testing.T) {
	doc := decoded(t)
	scheme := dig(t, doc, "components", "securitySchemes", "bearer").(map[string]any)
	if scheme["type"] != "http" || scheme["scheme"] != "bearer" {
		t.Errorf("bearer scheme = %v, want http bearer", scheme)
	}
	sec := dig(t, doc, "security").([]any)
	if len(sec) != 1 || dig(t, sec[0], "bearer") == nil {
		t.Errorf("security = %v, want bearer", sec)
	}
}

// TestRefsResolve walks the whole document: every $ref must name a schema
// that exists.
func TestRefsResolve(t *testing.T) {
	doc := decoded(t)
	schemas := schemasOf(t, doc)
	n := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"]; ok {
				n++
				s, _ := r.(string)
				name, found := strings.CutPrefix(s, schemaPrefix)
				if !found {
					t.Errorf("%s: $ref %v is not under %s", path, r, schemaPrefix)
				} else if schemas[name] == nil {
					t.Errorf("%s: $ref %s names no schema", path, s)
				}
				if len(v) != 1 {
					t.Errorf("%s: $ref has siblings, which OpenAPI 3.0 ignores: %v", path, v)
				}
			}
			for k, e := range v {
				walk(path+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(path+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", doc)
	if n == 0 {
		t.Fatal("no $ref in the document")
	}
	for name, s := range schemas {
		if s == nil {
			t.Errorf("schema %s was claimed but never written", name)
		}
	}
}

func TestKindSchemas(t *testing.T) {
	doc := decoded(t)
	network := dig(t, schemasOf(t, doc), "Network").(map[string]any)
	props := dig(t, network, "properties").(map[string]any)
	for _, want := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		if _, ok := props[want]; !ok {
			t.Errorf("Network has no property %s", want)
		}
	}
	if got := dig(t, props, "kind", "enum"); !reflect.DeepEqual(got, []any{"Network"}) {
		t.Errorf("Network kind enum = %v, want [Network]", got)
	}

	meta := resolve(t, doc, props["metadata"])
	for _, want := range []string{"name", "tenant", "resourceVersion", "labels", "ownerReferences"} {
		if _, ok := dig(t, meta, "properties").(map[string]any)[want]; !ok {
			t.Errorf("metadata has no property %s", want)
		}
	}
	if got := dig(t, meta, "properties", "labels", "additionalProperties", "type"); got != "string" {
		t.Errorf("metadata.labels values are %v, want string", got)
	}
	if got := dig(t, meta, "properties", "creationTimestamp"); !reflect.DeepEqual(got, map[string]any{"type": "string", "format": "date-time"}) {
		t.Errorf("metadata.creationTimestamp = %v, want a date-time string", got)
	}
	if got := dig(t, meta, "properties", "generation", "format"); got != "int64" {
		t.Errorf("metadata.generation format = %v, want int64", got)
	}

	// CommonStatus is embedded inline, so its fields are the status's own.
	status := resolve(t, doc, props["status"])
	for _, want := range []string{"phase", "conditions", "observedGeneration", "vni"} {
		if _, ok := dig(t, status, "properties").(map[string]any)[want]; !ok {
			t.Errorf("Network status has no property %s", want)
		}
	}
	if _, ok := dig(t, status, "properties").(map[string]any)["CommonStatus"]; ok {
		t.Error("Network status has CommonStatus as a property; it should be flattened")
	}
	cond := resolve(t, doc, dig(t, status, "properties", "conditions", "items"))
	if _, ok := dig(t, cond, "properties").(map[string]any)["lastTransitionTime"]; !ok {
		t.Error("Condition has no lastTransitionTime")
	}

	host := dig(t, schemasOf(t, doc), "Host", "properties").(map[string]any)
	spec := resolve(t, doc, host["spec"])
	if got := dig(t, spec, "properties", "reservedMemory", "type"); got != "string" {
		t.Errorf("Host spec.reservedMemory (Bytes) type = %v, want string", got)
	}
	if got := dig(t, spec, "properties", "cpuOvercommit", "type"); got != "number" {
		t.Errorf("Host spec.cpuOvercommit type = %v, want number", got)
	}
	if got := dig(t, spec, "properties", "unschedulable", "type"); got != "boolean" {
		t.Errorf("Host spec.unschedulable type = %v, want boolean", got)
	}

	list := dig(t, schemasOf(t, doc), "NetworkList", "properties").(map[string]any)
	if got := dig(t, resolve(t, doc, list["metadata"]), "properties", "resourceVersion", "type"); got != "string" {
		t.Errorf("NetworkList metadata.resourceVersion type = %v, want string", got)
	}
	if got := dig(t, list, "items", "items", "$ref"); got != schemaPrefix+"Network" {
		t.Errorf("NetworkList items are %v, want Networks", got)
	}
	dig(t, schemasOf(t, doc), "WatchEvent", "properties", "object")

	errStatus := dig(t, schemasOf(t, doc), "Status", "properties").(map[string]any)
	for _, want := range []string{"kind", "code", "reason", "message", "fields"} {
		if _, ok := errStatus[want]; !ok {
			t.Errorf("Status has no property %s", want)
		}
	}
	if got := dig(t, errStatus, "fields", "type"); got != "array" {
		t.Errorf("Status.fields type = %v, want array", got)
	}
}

// The reflection follows encoding/json on shapes the API types may grow.
type inner struct {
	Shared string `json:"shared"`
	Deep   string `json:"deep"`
}

type unexportedEmbedded struct {
	Hidden int `json:"hidden"`
}

//lint:file-ignore SA5008 sample.Dash's "-," names the field "-", as encoding/json does, which the schema must follow

type sample struct {
	inner               `json:",inline"`
	*unexportedEmbedded        // no tag: flattened too
	Shared              int    `json:"shared"` // hides inner.Shared
	Skipped             string `json:"-"`
	Dash                string `json:"-,"`
	Untagged            bool
	Count               uint16           `json:"count,omitempty"`
	Quoted              int64            `json:"quoted,string"`
	Raw                 json.RawMessage  `json:"raw"`
	Data                []byte           `json:"data"`
	Size                *api.Bytes       `json:"size"`
	When                time.Time        `json:"when"`
	Sets                map[string][]int `json:"sets"`
	Anything            any              `json:"anything"`
	Nested              struct{ A bool } `json:"nested"`
	Self                *sample          `json:"self"`
	Inner               inner            `json:"inner"`
	private             string
	ByName              map[string]*inner `json:"byName"`
}

func TestReflectionFollowsEncodingJSON(t *testing.T) {
	s := newSchemas()
	top := s.of(reflect.TypeFor[sample]())
	if !reflect.DeepEqual(top, ref("sample")) {
		t.Fatalf("sample schema = %v, want a $ref", top)
	}
	props := s.defs["sample"].(map[string]any)["properties"].(map[string]any)
	want := map[string]any{
		"shared":   map[string]any{"type": "integer", "format": "int64"},
		"deep":     map[string]any{"type": "string"},
		"hidden":   map[string]any{"type": "integer", "format": "int64"},
		"-":        map[string]any{"type": "string"},
		"Untagged": map[string]any{"type": "boolean"},
		"count":    map[string]any{"type": "integer", "format": "int32"},
		"quoted":   map[string]any{"type": "string"},
		"raw":      map[string]any{},
		"data":     map[string]any{"type": "string", "format": "byte"},
		"when":     map[string]any{"type": "string", "format": "date-time"},
		"sets":     map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "array", "items": map[string]any{"type": "integer", "format": "int64"}}},
		"anything": map[string]any{},
		"nested":   map[string]any{"type": "object", "properties": map[string]any{"A": map[string]any{"type": "boolean"}}},
		"self":     ref("sample"),
		"inner":    ref("inner"),
		"byName":   map[string]any{"type": "object", "additionalProperties": ref("inner")},
	}
	for name, w := range want {
		got, ok := props[name]
		if !ok {
			t.Errorf("no property %s", name)
			continue
		}
		if name == "size" {
			continue
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("property %s = %v, want %v", name, got, w)
		}
	}
	if got := props["size"].(map[string]any)["type"]; got != "string" {
		t.Errorf("size (*api.Bytes) type = %v, want string", got)
	}

	// The properties are exactly the keys encoding/json writes.
	b, err := json.Marshal(sample{unexportedEmbedded: &unexportedEmbedded{}, Count: 1, Raw: json.RawMessage("{}"), private: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var encoded map[string]any
	if err := json.Unmarshal(b, &encoded); err != nil {
		t.Fatal(err)
	}
	for k := range encoded {
		if _, ok := props[k]; !ok {
			t.Errorf("encoding/json writes %s, the schema has no such property", k)
		}
	}
	for k := range props {
		if _, ok := encoded[k]; !ok {
			t.Errorf("the schema has property %s, encoding/json writes no such key", k)
		}
	}

	if got := s.of(reflect.TypeFor[func()]()); got != nil {
		t.Errorf("func schema = %v, want nil (encoding/json cannot write one)", got)
	}
}

func TestHandler(t *testing.T) {
	h := Handler("v1.2.3")
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/openapi/v3", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d, want 200", method, rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Errorf("%s: Content-Type %q, want application/json", method, got)
		}
		if method == http.MethodGet {
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatalf("GET: body is not JSON: %v", err)
			}
			if got := doc["info"].(map[string]any)["version"]; got != "v1.2.3" {
				t.Errorf("GET: info.version = %v, want v1.2.3", got)
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/openapi/v3", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", rec.Code)
	}
}

// TestDocumentSecrets: the Secret kind is marked confidential, its
// stringData write-only, and Machines' power settings show the Secret
// references beside the deprecated inline password.
func TestDocumentSecrets(t *testing.T) {
	doc := decoded(t)
	schemas := schemasOf(t, doc)
	if got := dig(t, schemas, "Secret", "x-hearth-confidential"); got != true {
		t.Errorf("Secret x-hearth-confidential = %v, want true", got)
	}
	if got := dig(t, schemas, "SecretSpec", "properties", "stringData", "writeOnly"); got != true {
		t.Errorf("SecretSpec.stringData writeOnly = %v, want true", got)
	}
	if got := dig(t, schemas, "SecretSpec", "properties", "data", "additionalProperties", "format"); got != "byte" {
		t.Errorf("SecretSpec.data values have format %v, want byte (base64)", got)
	}
	power := dig(t, schemas, "MachinePower", "properties").(map[string]any)
	if got := refOf(power["passwordSecret"]); got != schemaPrefix+"SecretKeyRef" {
		t.Errorf("MachinePower.passwordSecret = %v, want a SecretKeyRef", got)
	}
	if got := dig(t, power, "password", "deprecated"); got != true {
		t.Errorf("MachinePower.password deprecated = %v, want true", got)
	}
	if got := dig(t, schemas, "PowerWebhook", "properties", "secretHeaders", "items", "$ref"); got != schemaPrefix+"SecretHeader" {
		t.Errorf("PowerWebhook.secretHeaders items = %v, want SecretHeader", got)
	}
	if _, ok := schemas["Machine"].(map[string]any)["x-hearth-confidential"]; ok {
		t.Error("Machine is marked confidential")
	}
}
