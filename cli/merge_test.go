package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

func jsonMap(t *testing.T, s string) map[string]any {
	t.Helper()
	if s == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return m
}

func TestThreeWayPatch(t *testing.T) {
	tests := []struct {
		name            string
		last, cur, next string
		want            string
	}{
		{"unchanged", `{"spec":{"cpus":1}}`, `{"spec":{"cpus":1,"host":"h1"}}`, `{"spec":{"cpus":1}}`, `{}`},
		{"fields others set are left alone", `{"spec":{"cpus":1}}`, `{"spec":{"cpus":1,"host":"h1","powerState":"Stopped"}}`, `{"spec":{"cpus":1}}`, `{}`},
		{"a changed field is set", `{"spec":{"cpus":1}}`, `{"spec":{"cpus":1,"host":"h1"}}`, `{"spec":{"cpus":2}}`, `{"spec":{"cpus":2}}`},
		{"a new field is set", `{"spec":{}}`, `{"spec":{"host":"h1"}}`, `{"spec":{"memory":"1Gi"}}`, `{"spec":{"memory":"1Gi"}}`},
		{"a field no longer set is removed", `{"spec":{"cpus":2,"memory":"1Gi"}}`, `{"spec":{"cpus":2,"memory":"1Gi","host":"h1"}}`, `{"spec":{"cpus":2}}`, `{"spec":{"memory":null}}`},
		{"a removed field already gone is not patched", `{"spec":{"cpus":2,"memory":"1Gi"}}`, `{"spec":{"cpus":2}}`, `{"spec":{"cpus":2}}`, `{}`},
		{"labels merge key by key", `{"metadata":{"labels":{"a":"1","b":"2"}}}`, `{"metadata":{"labels":{"a":"1","b":"2","c":"3"}}}`, `{"metadata":{"labels":{"a":"1"}}}`, `{"metadata":{"labels":{"b":null}}}`},
		{"a whole map no longer set is removed", `{"metadata":{"labels":{"a":"1"}}}`, `{"metadata":{"labels":{"a":"1"}}}`, `{"metadata":{}}`, `{"metadata":{"labels":null}}`},
		{"lists are replaced whole", `{"spec":{"nics":[{"network":"a"}]}}`, `{"spec":{"nics":[{"network":"a","model":"virtio"}]}}`, `{"spec":{"nics":[{"network":"a"},{"network":"b"}]}}`, `{"spec":{"nics":[{"network":"a"},{"network":"b"}]}}`},
		{"nothing applied before: only sets", ``, `{"spec":{"cpus":1,"host":"h1"}}`, `{"spec":{"cpus":2}}`, `{"spec":{"cpus":2}}`},
		{"a map where a scalar was", `{}`, `{"spec":{"boot":null}}`, `{"spec":{"boot":{"from":"disk"}}}`, `{"spec":{"boot":{"from":"disk"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := threeWayPatch(jsonMap(t, tt.last), jsonMap(t, tt.cur), jsonMap(t, tt.next))
			if want := jsonMap(t, tt.want); !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				t.Errorf("got %s, want %s", g, tt.want)
			}
		})
	}
}

// TestAppliedConfig: what apply records of a document is the document's
// own fields, without status, server-owned metadata, nulls or an old
// record, with the tenant apply chose.
func TestAppliedConfig(t *testing.T) {
	ms := parseManifests("vm.yaml", []byte(`apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: web-1
  uid: "1234"
  resourceVersion: "77"
  creationTimestamp: "2026-01-01T00:00:00Z"
  labels: {app: web}
  annotations:
    hearth.dev/last-applied-configuration: '{"old":true}'
spec:
  cpus: 2
  host: null
  boot: {from: kernel, kernel: {image: k}}
status:
  phase: Running
`))
	if bad := validateManifests(ms, "lab"); len(bad) > 0 {
		t.Fatalf("invalid: %v", (&manifestErrors{bad: bad, total: 1}).Error())
	}
	cfg, err := appliedConfig(ms[0])
	if err != nil {
		t.Fatal(err)
	}
	want := jsonMap(t, `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine",
		"metadata":{"name":"web-1","tenant":"lab","labels":{"app":"web"}},
		"spec":{"cpus":2,"boot":{"from":"kernel","kernel":{"image":"k"}}}}`)
	if !reflect.DeepEqual(cfg, want) {
		g, _ := json.Marshal(cfg)
		t.Fatalf("appliedConfig = %s", g)
	}
	desired, err := withLastApplied(ms[0].Obj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := desired["metadata"].(map[string]any)["annotations"].(map[string]any)[api.LastAppliedAnnotation].(string)
	if !reflect.DeepEqual(jsonMap(t, rec), want) {
		t.Errorf("recorded %s", rec)
	}
	if _, ok := cfg["metadata"].(map[string]any)["annotations"]; ok {
		t.Error("withLastApplied changed its argument")
	}
}

// TestRecordableKeepsNoCredentials: what apply records of a Secret or of
// a Machine with inline credentials holds none of their values, but still
// says which fields the file set.
func TestRecordableKeepsNoCredentials(t *testing.T) {
	ms := parseManifests("creds.yaml", []byte(`apiVersion: hearth.dev/v1alpha1
kind: Secret
metadata: {name: plug}
spec:
  stringData: {token: "Bearer sup3r"}
  data: {other: c2VjcmV0LXR3bw==}
---
apiVersion: hearth.dev/v1alpha1
kind: Machine
metadata: {name: node1}
spec:
  mac: "52:54:00:aa:bb:01"
  power:
    driver: webhook
    webhook:
      onURL: http://plug.lan/on
      offURL: http://plug.lan/off
      headers: {X-Room: garage-plugt0ken}
`))
	if bad := validateManifests(ms, "lab"); len(bad) > 0 {
		t.Fatalf("invalid: %v", (&manifestErrors{bad: bad, total: 2}).Error())
	}
	for _, m := range ms {
		cfg, err := appliedConfig(m)
		if err != nil {
			t.Fatal(err)
		}
		desired, err := withLastApplied(m.Obj, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rec := desired["metadata"].(map[string]any)["annotations"].(map[string]any)[api.LastAppliedAnnotation].(string)
		for _, secret := range []string{"sup3r", "c2VjcmV0LXR3bw", "plugt0ken"} {
			if strings.Contains(rec, secret) {
				t.Errorf("%s: the recorded configuration holds %q: %s", m.Source, secret, rec)
			}
		}
		// The values still go to the server, and the record still names
		// the fields.
		data, _ := json.Marshal(desired["spec"])
		switch m.Obj.GetTypeMeta().Kind {
		case "Secret":
			// stringData is write-only: not recorded at all.
			if !strings.Contains(string(data), "sup3r") || strings.Contains(rec, "stringData") || !strings.Contains(rec, `"data":{"other":null}`) {
				t.Errorf("secret: sent %s, recorded %s", data, rec)
			}
		case "Machine":
			if !strings.Contains(string(data), "plugt0ken") || !strings.Contains(rec, `"headers":{"X-Room":""}`) || !strings.Contains(rec, `"onURL":"http://plug.lan/on"`) {
				t.Errorf("machine: sent %s, recorded %s", data, rec)
			}
		}
	}
}
