// Package openapi describes Hearth's API as an OpenAPI 3.0 document, for
// API browsers, generated clients and anyone reading the API from outside.
//
// The document is built by reflection over the types in api/v1alpha1 and
// the kinds registered there, so a new kind or field shows up without
// anyone editing this package: each kind gets a schema named after it
// (with its KindInfo.Description), a {Kind}List schema, and the list,
// create, read, replace, patch, delete and status paths its scope calls
// for. Schemas follow encoding/json: fields are named by their json tags,
// embedded structs without a name are flattened, api.Bytes is a string
// such as "4Gi" and time.Time a date-time string. Types and fields are
// described by their Go doc comments (api.FieldDoc), which is what
// `hearth explain` shows.
package openapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Document returns the OpenAPI 3.0 document of the API served by a server
// of version serverVersion. Each call builds a new document, which the
// caller may change.
func Document(serverVersion string) map[string]any {
	kinds := api.Kinds()
	s := newSchemas()

	// Claim every fixed name first, so that a Go type that happens to
	// share one is the schema that gets a qualified name.
	kindTypes := make([]reflect.Type, len(kinds))
	for i, k := range kinds {
		kindTypes[i] = reflect.TypeOf(k.New()).Elem()
		s.claimType(k.Kind, kindTypes[i])
	}
	for name, schema := range extraSchemas(serverVersion) {
		s.define(name, schema)
	}
	for _, t := range extraTypes {
		s.name(t)
	}
	listMeta := s.name(reflect.TypeFor[api.ListMeta]())
	for _, k := range kinds {
		s.define(k.Kind+"List", listSchema(k, listMeta))
	}

	for i, k := range kinds {
		s.defs[k.Kind] = kindSchema(s, k, kindTypes[i])
	}
	// Nothing refers to a watch event (a watch answers a list's GET with
	// a stream of them), so it is written here for readers to find.
	s.name(reflect.TypeFor[api.WatchEvent]())
	b := &builder{paths: map[string]any{}, status: s.name(reflect.TypeFor[api.Status]())}
	tags := make([]any, 0, len(kinds)+3)
	for _, k := range kinds {
		b.kindPaths(k)
		tags = append(tags, map[string]any{"name": k.Kind, "description": k.Description})
	}
	b.extraPaths()
	tags = append(tags,
		map[string]any{"name": tagAuth, "description": "Who the caller is, and users' bearer tokens."},
		map[string]any{"name": tagJoin, "description": "Join tokens, and hosts registering with them."},
		map[string]any{"name": tagServer, "description": "The server itself."},
	)

	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "Hearth API",
			"version":     serverVersion,
			"description": "The API of Hearth, a homelab cloud. Objects are written as apiVersion " + api.APIVersion + "; errors are answered with a Status.",
		},
		"tags":  tags,
		"paths": b.paths,
		"components": map[string]any{
			"schemas": s.defs,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{
					"type":        "http",
					"scheme":      "bearer",
					"description": "A user's token (`hearth token create`), a host's token, or a join token for /join.",
				},
			},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
}

// kindSchema is the schema of an object of kind k, whose Go type is t.
func kindSchema(s *schemas, k *api.KindInfo, t reflect.Type) map[string]any {
	schema := s.structSchema(t)
	schema["description"] = k.Description
	schema["x-hearth-scope"] = k.Scope.String()
	if k.Confidential {
		// Read and written by cluster admins only, and sealed at rest.
		schema["x-hearth-confidential"] = true
	}
	props := schema["properties"].(map[string]any)
	if _, ok := props["apiVersion"]; ok {
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{api.APIVersion}}
	}
	if _, ok := props["kind"]; ok {
		props["kind"] = map[string]any{"type": "string", "enum": []any{k.Kind}}
	}
	return schema
}

func listSchema(k *api.KindInfo, listMeta string) map[string]any {
	return map[string]any{
		"type":        "object",
		"description": "A list of " + k.Plural + ".",
		"properties": map[string]any{
			"apiVersion": map[string]any{"type": "string", "enum": []any{api.APIVersion}},
			"kind":       map[string]any{"type": "string", "enum": []any{k.Kind + "List"}},
			"metadata":   ref(listMeta),
			"items":      map[string]any{"type": "array", "items": ref(k.Kind)},
		},
	}
}

// Handler serves the document as JSON. The document is built once, when
// the handler is made: the kinds cannot change while the server runs.
func Handler(serverVersion string) http.Handler {
	body, err := json.Marshal(Document(serverVersion))
	if err != nil {
		// The document holds only maps, slices, strings and bools.
		panic(fmt.Sprintf("openapi: marshal document: %v", err))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the OpenAPI document is read with GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(body)
	})
}
