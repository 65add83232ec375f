package openapi

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// errorText says what each error status means in this API. Every error
// body is a Status.
var errorText = map[int]string{
	http.StatusBadRequest:          "The request is malformed: bad JSON, a bad labelSelector, resourceVersion or dryRun.",
	http.StatusUnauthorized:        "No bearer token, or one the server does not accept.",
	http.StatusForbidden:           "The caller's role does not allow this, or a quota would be exceeded.",
	http.StatusNotFound:            "The object (or its tenant) does not exist.",
	http.StatusConflict:            "The object already exists, or metadata.resourceVersion is stale: read it again and retry.",
	http.StatusGone:                "The resourceVersion to watch from has been compacted: list again and watch from the list's resourceVersion.",
	http.StatusUnprocessableEntity: "The object is invalid; fields says what is wrong with each bad field.",
}

// builder writes the paths. Operations refer to schemas by name; the
// schemas are written by the caller.
type builder struct {
	paths map[string]any
	// status names the schema of error bodies.
	status string
}

// operation is one HTTP method on one path.
type operation struct {
	id, summary, description string
	tags                     []string
	params                   []any
	// body is the request body's schema name, sent as bodyType.
	body, bodyType string
	// okCode answers with the okSchema schema (none when empty).
	okCode, okText, okSchema string
	errors                   []int
	// public operations need no bearer token.
	public bool
	// warns marks writes whose answer may carry Warning headers.
	warns bool
}

func (b *builder) add(path, method string, pathParams []any, o operation) {
	item, _ := b.paths[path].(map[string]any)
	if item == nil {
		item = map[string]any{}
		if len(pathParams) > 0 {
			item["parameters"] = pathParams
		}
		b.paths[path] = item
	}
	item[method] = b.operation(o)
}

func (b *builder) operation(o operation) map[string]any {
	ok := map[string]any{"description": o.okText}
	if o.okSchema != "" {
		ok["content"] = jsonContent(o.okSchema)
	}
	if o.warns {
		ok["headers"] = map[string]any{"Warning": warningHeader}
	}
	responses := map[string]any{o.okCode: ok}
	for _, code := range o.errors {
		responses[strconv.Itoa(code)] = b.errorResponse(errorText[code])
	}
	responses["default"] = b.errorResponse("Any other error, such as 500 or 503 (etcd unreachable).")
	op := map[string]any{
		"operationId": o.id,
		"summary":     o.summary,
		"tags":        o.tags,
		"responses":   responses,
	}
	if o.description != "" {
		op["description"] = o.description
	}
	if len(o.params) > 0 {
		op["parameters"] = o.params
	}
	if o.body != "" {
		typ := o.bodyType
		if typ == "" {
			typ = "application/json"
		}
		op["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{typ: map[string]any{"schema": ref(o.body)}},
		}
	}
	if o.public {
		op["security"] = []any{}
	}
	return op
}

func (b *builder) errorResponse(text string) map[string]any {
	return map[string]any{"description": text, "content": jsonContent(b.status)}
}

func jsonContent(schema string) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": ref(schema)}}
}

func pathParam(name, description string) map[string]any {
	return map[string]any{
		"name": name, "in": "path", "required": true, "description": description,
		"schema": map[string]any{"type": "string"},
	}
}

func queryParam(name, typ, description string) map[string]any {
	return map[string]any{
		"name": name, "in": "query", "description": description,
		"schema": map[string]any{"type": typ},
	}
}

// enumParam limits a parameter to values.
func enumParam(p map[string]any, values ...any) map[string]any {
	p["schema"].(map[string]any)["enum"] = values
	return p
}

var (
	tenantParam = pathParam("tenant", "The tenant the objects belong to.")
	nameParam   = pathParam("name", "The object's metadata.name.")

	// dryRunParam is taken by every write of an object.
	dryRunParam = enumParam(queryParam("dryRun", "string", "All: run the write as far as the write itself (authorization, defaults, validation, admission checks such as quotas and subnet overlaps, and the store's conditions such as a stale resourceVersion or a taken name) and answer as the write would, but change nothing. A dry run fails exactly where the write would."), "All")

	warningHeader = map[string]any{
		"description": `Advice about the write, one header each, as Kubernetes sends it: 299 - "TEXT". Today: a name in the spec that names no object, such as 299 - "spec.nics[0].network: network \"lan\" does not exist in tenant demo".`,
		"schema":      map[string]any{"type": "string"},
	}

	listParams = []any{
		queryParam("labelSelector", "string", `Only objects whose labels match, in kubectl's syntax: "app=web,tier!=db,env in (prod,staging),canary,!legacy".`),
		queryParam("watch", "boolean", "Stream changes to the matching objects, one WatchEvent a line, instead of listing them. Start from a list's resourceVersion to miss nothing."),
		queryParam("resourceVersion", "string", "With watch, stream the changes after this resourceVersion (a list's metadata.resourceVersion). One etcd has compacted gets 410 Gone."),
	}
)

// scope is one place a kind's objects are addressed from: the cluster, or
// a tenant.
type scope struct {
	// prefix is the collection's path.
	prefix string
	params []any
	// idInfix tells this scope's operationIds from the other's, for kinds
	// with both (listClusterEvents beside listEvents).
	idInfix string
	// where ends summaries: " in a tenant", " with no tenant".
	where string
}

// kindPaths writes the paths of one kind. Tenant-scoped objects live under
// /tenants/{tenant}/; a tenant-scoped kind is also listed across every
// tenant at the top, and a TenantOptional kind has the whole set of paths
// in both places.
func (b *builder) kindPaths(k *api.KindInfo) {
	cluster := scope{prefix: api.PathPrefix + "/" + k.Plural}
	tenant := scope{prefix: api.PathPrefix + "/tenants/{tenant}/" + k.Plural, params: []any{tenantParam}, where: " in a tenant"}
	switch k.Scope {
	case api.ClusterScoped:
		b.objectPaths(k, cluster)
	case api.TenantScoped:
		b.objectPaths(k, tenant)
		b.add(cluster.prefix, "get", nil, operation{
			id:       "list" + pluralTitle(k) + "AllTenants",
			summary:  "List " + k.Plural + " in every tenant",
			tags:     []string{k.Kind},
			params:   listParams,
			okCode:   "200",
			okText:   "The " + k.Plural + " of every tenant, or with watch=true a stream of their changes.",
			okSchema: k.Kind + "List",
			errors:   []int{400, 401, 403, 410},
		})
	case api.TenantOptional:
		b.objectPaths(k, tenant)
		cluster.idInfix, cluster.where = "Cluster", " with no tenant"
		b.objectPaths(k, cluster)
	}
}

// objectPaths writes a kind's collection, object and status paths in one
// scope.
func (b *builder) objectPaths(k *api.KindInfo, sc scope) {
	kind, tags := sc.idInfix+k.Kind, []string{k.Kind}
	objectParams := append(append([]any{}, sc.params...), nameParam)
	const conditional = "Send metadata.resourceVersion as read to make the update conditional: if the object changed since, the answer is 409 Conflict."

	listErrors := []int{400, 401, 403, 410}
	if len(sc.params) > 0 {
		listErrors = []int{400, 401, 403, 404, 410} // no such tenant
	}
	b.add(sc.prefix, "get", sc.params, operation{
		id:       "list" + sc.idInfix + pluralTitle(k),
		summary:  "List " + k.Plural + sc.where,
		tags:     tags,
		params:   listParams,
		okCode:   "200",
		okText:   "The " + k.Plural + ", or with watch=true a stream of their changes.",
		okSchema: k.Kind + "List",
		errors:   listErrors,
	})
	b.add(sc.prefix, "post", sc.params, operation{
		id:       "create" + kind,
		summary:  "Create a " + k.Kind + sc.where,
		params:   []any{dryRunParam},
		warns:    true,
		tags:     tags,
		body:     k.Kind,
		okCode:   "201",
		okText:   "The " + k.Kind + " as created, defaults filled in.",
		okSchema: k.Kind,
		errors:   []int{400, 401, 403, 404, 409, 422},
	})

	object := sc.prefix + "/{name}"
	b.add(object, "get", objectParams, operation{
		id:       "read" + kind,
		summary:  "Read a " + k.Kind + sc.where,
		tags:     tags,
		okCode:   "200",
		okText:   "The " + k.Kind + ".",
		okSchema: k.Kind,
		errors:   []int{401, 403, 404},
	})
	b.add(object, "put", objectParams, operation{
		id:          "replace" + kind,
		summary:     "Replace a " + k.Kind + sc.where,
		description: conditional,
		params:      []any{dryRunParam},
		warns:       true,
		tags:        tags,
		body:        k.Kind,
		okCode:      "200",
		okText:      "The " + k.Kind + " as stored.",
		okSchema:    k.Kind,
		errors:      []int{400, 401, 403, 404, 409, 422},
	})
	b.add(object, "patch", objectParams, operation{
		id:          "patch" + kind,
		summary:     "Change part of a " + k.Kind + sc.where + " with a JSON merge patch (RFC 7396)",
		description: conditional,
		params:      []any{dryRunParam},
		warns:       true,
		tags:        tags,
		body:        k.Kind,
		bodyType:    "application/merge-patch+json",
		okCode:      "200",
		okText:      "The " + k.Kind + " as stored.",
		okSchema:    k.Kind,
		errors:      []int{400, 401, 403, 404, 409, 422},
	})
	b.add(object, "delete", objectParams, operation{
		id:          "delete" + kind,
		summary:     "Delete a " + k.Kind + sc.where,
		description: "An object with finalizers is only marked for deletion (metadata.deletionTimestamp) until they are removed.",
		params:      []any{dryRunParam},
		tags:        tags,
		okCode:      "200",
		okText:      "The " + k.Kind + " as deleted, or as marked for deletion.",
		okSchema:    k.Kind,
		errors:      []int{400, 401, 403, 404, 409},
	})

	status := object + "/status"
	b.add(status, "get", objectParams, operation{
		id:       "read" + kind + "Status",
		summary:  "Read the status of a " + k.Kind + sc.where,
		tags:     tags,
		okCode:   "200",
		okText:   "The " + k.Kind + ".",
		okSchema: k.Kind,
		errors:   []int{401, 403, 404},
	})
	b.add(status, "put", objectParams, operation{
		id:          "replace" + kind + "Status",
		summary:     "Replace the status of a " + k.Kind + sc.where,
		description: conditional,
		params:      []any{dryRunParam},
		tags:        tags,
		body:        k.Kind,
		okCode:      "200",
		okText:      "The " + k.Kind + " as stored.",
		okSchema:    k.Kind,
		errors:      []int{400, 401, 403, 404, 409, 422},
	})
	b.add(status, "patch", objectParams, operation{
		id:          "patch" + kind + "Status",
		summary:     "Change part of the status of a " + k.Kind + sc.where + " with a JSON merge patch (RFC 7396)",
		description: conditional,
		params:      []any{dryRunParam},
		tags:        tags,
		body:        k.Kind,
		bodyType:    "application/merge-patch+json",
		okCode:      "200",
		okText:      "The " + k.Kind + " as stored.",
		okSchema:    k.Kind,
		errors:      []int{400, 401, 403, 404, 409, 422},
	})
}

// pluralTitle writes a kind's plural the way the kind is capitalised:
// VirtualMachines for virtualmachines, Policies for policies.
func pluralTitle(k *api.KindInfo) string {
	kind, plural := k.Kind, k.Plural
	n := 0
	for n < len(kind) && n < len(plural) && strings.EqualFold(kind[n:n+1], plural[n:n+1]) {
		n++
	}
	if n == 0 {
		return strings.ToUpper(plural[:1]) + plural[1:]
	}
	return kind[:n] + plural[n:]
}

// Tags of the endpoints that are not kinds.
const (
	tagAuth   = "Authentication"
	tagJoin   = "Join"
	tagServer = "Server"
)

// extraSchemas are the bodies of the endpoints that are not kinds and
// have no Go type: an image's bytes, and the version.
func extraSchemas(serverVersion string) map[string]map[string]any {
	return map[string]map[string]any{
		"ImageContent": {"type": "string", "format": "binary", "description": "An image's bytes (qcow2, raw or ISO)."},
		"Version": {
			"type":        "object",
			"description": "The server's version.",
			"properties": map[string]any{
				"version":    map[string]any{"type": "string", "description": "The server's build."},
				"apiVersion": map[string]any{"type": "string", "enum": []any{api.APIVersion}},
			},
			"example": map[string]any{"version": serverVersion, "apiVersion": api.APIVersion},
		},
	}
}

// extraTypes are the Go types of the bodies of the endpoints that are
// not kinds (api/v1alpha1/tokens.go, observe.go), written by reflection as the kinds
// are and named after their types.
var extraTypes = []reflect.Type{
	reflect.TypeFor[api.WhoAmI](),
	reflect.TypeFor[api.TokenRequest](),
	reflect.TypeFor[api.TokenResponse](),
	reflect.TypeFor[api.TokenRecord](),
	reflect.TypeFor[api.TokenList](),
	reflect.TypeFor[api.JoinRequest](),
	reflect.TypeFor[api.JoinResponse](),
	reflect.TypeFor[api.HostLeaseRenewal](),
	reflect.TypeFor[api.MigrationCertRequest](),
	reflect.TypeFor[api.MigrationCertResponse](),
	reflect.TypeFor[api.BindingRequest](),
	reflect.TypeFor[api.BindingResponse](),
	reflect.TypeFor[api.Stats](),
	reflect.TypeFor[api.SensorReadings](),
	reflect.TypeFor[api.PowerRequest](),
	reflect.TypeFor[api.PowerResponse](),
}

// extraPaths writes the endpoints that are not kinds.
func (b *builder) extraPaths() {
	userParams := []any{pathParam("name", "The User's metadata.name.")}
	idParam := pathParam("id", "The token's id: the first 12 hex digits of its hash, as listed.")

	b.add(api.PathPrefix+"/whoami", "get", nil, operation{
		id: "whoAmI", summary: "Say who the bearer token belongs to", tags: []string{tagAuth},
		okCode: "200", okText: "The caller.", okSchema: "WhoAmI",
		errors: []int{401},
	})
	tokens := api.PathPrefix + "/users/{name}/tokens"
	b.add(tokens, "post", userParams, operation{
		id: "createUserToken", summary: "Create a bearer token for a User", tags: []string{tagAuth},
		body:   "TokenRequest",
		okCode: "201", okText: "The token, with its secret, shown this once: the server keeps only its hash.", okSchema: "TokenResponse",
		errors: []int{400, 401, 403, 404, 422},
	})
	b.add(tokens, "get", userParams, operation{
		id: "listUserTokens", summary: "List a User's tokens", tags: []string{tagAuth},
		okCode: "200", okText: "The User's tokens, oldest first, without their secrets.", okSchema: "TokenList",
		errors: []int{401, 403, 404},
	})
	b.add(tokens+"/{id}", "delete", append(append([]any{}, userParams...), idParam), operation{
		id: "deleteUserToken", summary: "Revoke one of a User's tokens", tags: []string{tagAuth},
		okCode: "200", okText: "The token is revoked; it is refused from now on.", okSchema: "TokenRecord",
		errors: []int{401, 403, 404},
	})
	b.add(api.PathPrefix+"/jointokens", "post", nil, operation{
		id: "createJoinToken", summary: "Create a join token, good only for registering hosts", tags: []string{tagJoin},
		description: "Site and labels are given to the Hosts it makes; ttl defaults to 24h; reusable tokens register hosts until they expire, others one; host makes a token that re-joins that existing Host and nothing else.",
		body:        "TokenRequest",
		okCode:      "201", okText: "The join token, with its secret, shown this once.", okSchema: "TokenResponse",
		errors: []int{400, 401, 403, 422},
	})
	b.add(api.PathPrefix+"/jointokens", "get", nil, operation{
		id: "listJoinTokens", summary: "List join tokens", tags: []string{tagJoin},
		okCode: "200", okText: "The join tokens, oldest first, without their secrets; uses counts a reusable token's joins.", okSchema: "TokenList",
		errors: []int{401, 403},
	})
	b.add(api.PathPrefix+"/jointokens/{id}", "delete", []any{idParam}, operation{
		id: "deleteJoinToken", summary: "Revoke a join token", tags: []string{tagJoin},
		okCode: "200", okText: "The join token is revoked; joins with it are refused from now on.", okSchema: "TokenRecord",
		errors: []int{401, 403, 404},
	})
	b.add(api.PathPrefix+"/hosttokens", "get", nil, operation{
		id: "listHostTokens", summary: "List the credentials of hosts and boot services", tags: []string{tagJoin},
		params: []any{queryParam("host", "string", "Only the credentials of this host (or boot service).")},
		okCode: "200", okText: "The credentials of hosts (kind host) and boot services (kind boot), oldest first, without their secrets.", okSchema: "TokenList",
		errors: []int{401, 403},
	})
	b.add(api.PathPrefix+"/hosttokens/{id}", "delete", []any{idParam}, operation{
		id: "deleteHostToken", summary: "Revoke a host's or boot service's credential", tags: []string{tagJoin},
		description: "Deleting a Host revokes its credentials as well.",
		okCode:      "200", okText: "The credential is revoked; it is refused from now on.", okSchema: "TokenRecord",
		errors: []int{401, 403, 404},
	})
	b.add(api.PathPrefix+"/join", "post", nil, operation{
		id: "joinHost", summary: "Register a new host (its Host is made here) or boot service", tags: []string{tagJoin},
		description: "The bearer token is a join token, spent by this join unless reusable; the host gets a token of its own in exchange. A new host's Host is created with the join token's site and labels and the address given. A name already taken is refused (409) unless the join token was made to re-join that Host, which then gets a new credential and loses its old ones.",
		body:        "JoinRequest",
		okCode:      "200", okText: "The host is registered.", okSchema: "JoinResponse",
		errors: []int{400, 401, 403, 409, 422},
	})
	b.add(api.PathPrefix+"/hosts/{name}/heartbeat", "post", []any{nameParam}, operation{
		id: "renewHostLease", summary: "Renew a host's lease (its own credential only)", tags: []string{"Host"},
		description: "The agent's heartbeat: the server renews an etcd lease it keeps for the host and writes nothing to the Host. A Host whose lease runs out (and whose status.lastHeartbeat is as old) becomes NotReady.",
		okCode:      "200", okText: "The lease is renewed for the Host's spec.leaseSeconds.", okSchema: "HostLeaseRenewal",
		errors: []int{401, 403, 404, 503},
	})
	b.add(api.PathPrefix+"/hosts/{name}/migrationcert", "post", []any{nameParam}, operation{
		id: "signMigrationCertificate", summary: "Sign a host's live-migration certificate (its own credential only)", tags: []string{"Host"},
		description: "The server signs the host's key (a PKCS #10 request) with the cluster's migration CA, a CA that signs nothing else: a certificate for the host's name and its Host's spec.address only, whatever the request names. QEMU on both ends of a live migration trusts only that CA.",
		body:        "MigrationCertRequest",
		okCode:      "200", okText: "The host's certificate and the migration CA.", okSchema: "MigrationCertResponse",
		errors: []int{400, 401, 403, 404, 422},
	})
	b.add(api.BindingsPath, "post", nil, operation{
		id: "bindVirtualMachines", summary: "Bind several VirtualMachines to hosts at once (the scheduler's writes)", tags: []string{"VirtualMachine"},
		description: "Each item is what a PATCH of the VM's spec.host at its resourceVersion would be (authorized, validated and admitted as that update; the VM is made Scheduled in the same write), with a Scheduled event; all are written in one etcd transaction, but each succeeds or fails on its own: the answer's items say which, in order (a Conflict means the VM changed since the version named).",
		body:        "BindingRequest",
		okCode:      "200", okText: "What became of each binding.", okSchema: "BindingResponse",
		errors: []int{400, 401, 413, 422},
	})
	vm := api.PathPrefix + "/tenants/{tenant}/virtualmachines/{name}"
	vmParams := []any{tenantParam, nameParam}
	b.add(vm+"/log", "get", vmParams, operation{
		id: "readVirtualMachineLog", summary: "Read a VM's serial console log", tags: []string{"VirtualMachine"},
		description: "Plain text. Query follow=1 streams new output; tailLines=N or tail=BYTES (not both) returns only the end. Needs the right to read the VM.",
		params: []any{queryParam("follow", "boolean", "Keep the response open and stream new output."),
			queryParam("tailLines", "integer", "Only the last this many lines (a last line without a newline counts)."),
			queryParam("tail", "integer", "Only the last this many bytes.")},
		okCode: "200", okText: "The console log (text/plain).",
		errors: []int{400, 401, 403, 404, 503},
	})
	b.add(vm+"/console", "get", vmParams, operation{
		id: "attachVirtualMachineConsole", summary: "Attach to a VM's serial console", tags: []string{"VirtualMachine"},
		description: "A websocket upgrade; binary messages carry the console both ways. Needs the right to change the VM.",
		okCode:      "101", okText: "Switching to the websocket protocol.",
		errors: []int{400, 401, 403, 404, 503},
	})
	b.add(vm+"/stats", "get", vmParams, operation{
		id: "readVirtualMachineStats", summary: "Read the last hour of a VM's CPU, memory, disk and network figures", tags: []string{"VirtualMachine"},
		description: "Kept in memory by the agent of the VM's host (sampled every 10 s by default; rates in bytes per second) and lost when the VM stops or the agent restarts. Needs the right to read the VM.",
		okCode:      "200", okText: "The samples.", okSchema: "Stats",
		errors: []int{401, 403, 404, 503},
	})
	b.add(api.PathPrefix+"/machines/{name}/sensors", "get", []any{nameParam}, operation{
		id: "readMachineSensors", summary: "Read a machine's BMC sensors (temperatures, fans, power drawn)", tags: []string{"Machine"},
		description: "For machines with IPMI power. The leader reads every such BMC every 30 s; a reading older than twice that is taken again before answering. Needs the right to read the Machine.",
		okCode:      "200", okText: "The readings.", okSchema: "SensorReadings",
		errors: []int{400, 401, 403, 404},
	})
	b.add(api.PathPrefix+"/machines/{name}/power", "post", []any{nameParam}, operation{
		id: "powerMachine", summary: "Switch a machine on, off or through a cycle, or read its power state", tags: []string{"Machine"},
		description: "The server drives the machine's BMC, plug or Wake-on-LAN as `hearth machine power` does, with the caller's right to the Secrets its power settings name (cluster admins). Each action is an event on the machine. A dry run checks everything and reaches no machine.",
		params:      []any{dryRunParam},
		warns:       true,
		body:        "PowerRequest",
		okCode:      "200", okText: "Done.", okSchema: "PowerResponse",
		errors: []int{400, 401, 403, 404, 422, 503},
	})
	b.add(api.PathPrefix+"/hosts/{name}/stats", "get", []any{nameParam}, operation{
		id: "readHostStats", summary: "Read the last hour of a host's CPU, memory, disk and network figures", tags: []string{"Host"},
		description: "Kept in memory by the host's agent (sampled every 10 s by default; rates in bytes per second). Needs the right to read the Host.",
		okCode:      "200", okText: "The samples.", okSchema: "Stats",
		errors: []int{401, 403, 404, 503},
	})
	for _, img := range []struct {
		path   string
		params []any
		id     string
	}{
		{api.PathPrefix + "/tenants/{tenant}/images/{name}/content", []any{tenantParam, nameParam}, ""},
		{api.PathPrefix + "/images/{name}/content", []any{nameParam}, "Cluster"},
	} {
		b.add(img.path, "put", img.params, operation{
			id: "upload" + img.id + "ImageContent", summary: "Upload an Image's content", tags: []string{"Image"},
			description: "The body is the image, streamed; it is checked against spec.source.checksum when set.",
			body:        "ImageContent", bodyType: "application/octet-stream",
			okCode: "200", okText: "The Image, with its checksum and size recorded.", okSchema: "Image",
			errors: []int{400, 401, 403, 404, 409, 422},
		})
		b.add(img.path, "get", img.params, operation{
			id: "download" + img.id + "ImageContent", summary: "Download an uploaded Image's content (Range requests allowed)", tags: []string{"Image"},
			okCode: "200", okText: "The image (application/octet-stream).",
			errors: []int{401, 403, 404},
		})
	}
	b.add("/healthz", "get", nil, operation{
		id: "checkHealth", summary: "Say whether the server can serve", tags: []string{tagServer},
		okCode: "200", okText: "The server is healthy.",
		public: true,
	})
	b.add("/livez", "get", nil, operation{
		id: "checkLive", summary: "Say whether the server process is alive (as /healthz)", tags: []string{tagServer},
		okCode: "200", okText: "The server is alive.",
		public: true,
	})
	b.add("/readyz", "get", nil, operation{
		id: "checkReady", summary: "Say whether the server can serve requests: its etcd answers", tags: []string{tagServer},
		okCode: "200", okText: "The server is ready (when it is not: 503, with the reason as text).",
		public: true,
	})
	b.add("/metrics", "get", nil, operation{
		id: "readMetrics", summary: "Read the server's Prometheus metrics (text exposition format)", tags: []string{tagServer},
		description: "For cluster-wide users (cluster admins and viewers): the figures name machines, their sensors and the store's health. Give Prometheus a viewer's token.",
		okCode:      "200", okText: "The metrics.",
		errors: []int{401, 403},
	})
	for _, path := range []string{"/openapi/v3", "/openapi.json"} {
		id := "readOpenAPI"
		if path == "/openapi.json" {
			id = "readOpenAPIJSON"
		}
		b.add(path, "get", nil, operation{
			id: id, summary: "Read this OpenAPI document", tags: []string{tagServer},
			okCode: "200", okText: "The document (application/json).",
			public: true,
		})
	}
	b.add("/version", "get", nil, operation{
		id: "readVersion", summary: "Say which version the server runs", tags: []string{tagServer},
		okCode: "200", okText: "The server's version.", okSchema: "Version",
		public: true,
	})
}
