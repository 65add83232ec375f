package cli

import (
	"encoding/json"
	"fmt"
	"reflect"

	api "hearth.dev/hearth/api/v1alpha1"
)

// apply is declarative the way kubectl's client-side apply is: each object
// keeps, in its LastAppliedAnnotation, the configuration apply last wrote
// for it (what its file said, nothing more), and a re-apply sends a JSON
// merge patch computed from three versions:
//
//   - a field the file sets and the object does not have, or has with
//     another value, is set;
//   - a field the last-applied configuration set and the file no longer
//     sets is removed;
//   - a field the file never set is left alone: the scheduler's
//     spec.host, the powerState `hearth vm stop` wrote, a label someone
//     added by hand.
//
// Objects recurse field by field; lists are replaced whole (merge patch
// has no way to change one element), so a list is owned by whoever set
// it. See docs/ARCHITECTURE.md for why this rather than server-side apply.

// serverOwnedMeta are metadata fields the server writes; a file from
// `hearth get -o yaml` carries them, but they are not configuration.
var serverOwnedMeta = []string{"uid", "resourceVersion", "generation", "creationTimestamp", "updateTimestamp", "deletionTimestamp"}

// appliedConfig is what a document says about its object, as apply
// records and compares it: the document's own fields with nulls dropped,
// without status or server-owned metadata, and with the tenant apply
// chose for it.
func appliedConfig(m *manifest) (map[string]any, error) {
	var cfg map[string]any
	if err := json.Unmarshal(m.Raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Source, err)
	}
	dropNulls(cfg)
	delete(cfg, "status")
	md, _ := cfg["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		cfg["metadata"] = md
	}
	for _, f := range serverOwnedMeta {
		delete(md, f)
	}
	if ann, ok := md["annotations"].(map[string]any); ok {
		delete(ann, api.LastAppliedAnnotation)
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	if t := m.Obj.GetMetadata().Tenant; t != "" {
		md["tenant"] = t
	}
	return cfg, nil
}

// withLastApplied returns a copy of cfg, the object apply writes, that
// records in its LastAppliedAnnotation what apply may keep of cfg (see
// recordable): obj is the object cfg decodes to.
func withLastApplied(obj api.Object, cfg map[string]any) (map[string]any, error) {
	rec, err := recordable(obj, cfg)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(rec) // map keys sorted: the same file gives the same text
	if err != nil {
		return nil, err
	}
	out := deepCopyMap(cfg)
	md := out["metadata"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		md["annotations"] = ann
	}
	ann[api.LastAppliedAnnotation] = string(data)
	return out, nil
}

// recordable is what apply records of cfg: cfg, except for credentials,
// what an api.Redactor spec blanks (a smart plug's header values, a
// Secret's values): they are recorded as redacted, and fields redaction
// drops (a Secret's write-only stringData) not at all. The annotation is
// read by everyone who may read the object: holding the spec's words it
// would hand out what the server redacts from the spec. A blanked value
// still says the file set the field, so dropping it from the file removes
// it.
func recordable(obj api.Object, cfg map[string]any) (map[string]any, error) {
	if _, ok := obj.SpecAny().(api.Redactor); !ok {
		return cfg, nil
	}
	redacted := api.DeepCopy(obj)
	redacted.SpecAny().(api.Redactor).Redact()
	orig, err := objectMap(obj)
	if err != nil {
		return nil, err
	}
	red, err := objectMap(redacted)
	if err != nil {
		return nil, err
	}
	out := deepCopyMap(cfg)
	if spec, ok := out["spec"].(map[string]any); ok {
		os, _ := orig["spec"].(map[string]any)
		rs, _ := red["spec"].(map[string]any)
		maskRedacted(spec, os, rs)
	}
	return out, nil
}

// maskRedacted replaces each field of m whose value redaction changed
// (orig before, red after) with the redacted value, and removes those
// redaction removed.
func maskRedacted(m, orig, red map[string]any) {
	for k, v := range m {
		rv, kept := red[k]
		if _, had := orig[k]; had && !kept {
			delete(m, k)
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			os, _ := orig[k].(map[string]any)
			rs, _ := rv.(map[string]any)
			maskRedacted(sub, os, rs)
			continue
		}
		if !reflect.DeepEqual(orig[k], rv) {
			m[k] = rv
		}
	}
}

// lastApplied reads the configuration apply last wrote for obj (nil if
// none, or if the annotation is not what apply writes).
func lastApplied(obj api.Object) map[string]any {
	s, ok := obj.GetMetadata().Annotations[api.LastAppliedAnnotation]
	if !ok {
		return nil
	}
	var cfg map[string]any
	if json.Unmarshal([]byte(s), &cfg) != nil {
		return nil
	}
	return cfg
}

// objectMap is obj as JSON fields.
func objectMap(obj api.Object) (map[string]any, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(data, &m)
	return m, err
}

// threeWayPatch returns the merge patch (RFC 7386) that takes cur to next
// while leaving alone what neither next nor last sets: next's fields that
// cur lacks or holds differently, and nulls for last's fields that next
// dropped. last may be nil (nothing applied before).
func threeWayPatch(last, cur, next map[string]any) map[string]any {
	patch := map[string]any{}
	for k, nv := range next {
		cv, inCur := cur[k]
		nm, nIsMap := nv.(map[string]any)
		cm, cIsMap := cv.(map[string]any)
		if nIsMap && cIsMap {
			lm, _ := last[k].(map[string]any)
			if sub := threeWayPatch(lm, cm, nm); len(sub) > 0 {
				patch[k] = sub
			}
			continue
		}
		if !inCur || !reflect.DeepEqual(nv, cv) {
			patch[k] = nv
		}
	}
	for k := range last {
		if _, inNext := next[k]; inNext {
			continue
		}
		if cv, inCur := cur[k]; inCur && cv != nil {
			patch[k] = nil
		}
	}
	return patch
}

// dropNulls removes null fields: in a file they mean "not set", in a merge
// patch "delete".
func dropNulls(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(x)
		}
	}
}

func deepCopyMap(m map[string]any) map[string]any {
	data, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return out
}
