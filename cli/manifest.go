package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	api "hearth.dev/hearth/api/v1alpha1"
)

// manifest is one object read from a file given to `apply -f` or
// `delete -f`, with where it came from so errors can point at it.
type manifest struct {
	// Source is "lab.yaml (document 2)", or "- (document 1)" for stdin.
	Source string
	Obj    api.Object
	// Raw is the document as JSON: the fields it sets, which apply
	// records and compares (see appliedConfig).
	Raw json.RawMessage
	// Errs are what is wrong with the document; an object with errors is
	// never sent.
	Errs api.FieldErrors
	// Err is a problem that is not about one field (the document is not
	// YAML, say).
	Err error
}

func (m *manifest) failed() bool { return len(m.Errs) > 0 || m.Err != nil }

// manifestErrors are every invalid document of an apply. They are all
// reported at once so one edit can fix every file, and nothing is
// written while any remain.
type manifestErrors struct {
	bad   []*manifest
	total int
}

func (e *manifestErrors) Error() string {
	var b strings.Builder
	verb := "are"
	if len(e.bad) == 1 {
		verb = "is"
	}
	fmt.Fprintf(&b, "%d of %d documents %s invalid; nothing was changed:", len(e.bad), e.total, verb)
	for _, m := range e.bad {
		fmt.Fprintf(&b, "\n  %s", m.Source)
		if m.Obj != nil && m.Obj.GetMetadata().Name != "" {
			fmt.Fprintf(&b, " %s %q", m.Obj.GetTypeMeta().Kind, m.Obj.GetMetadata().Name)
		}
		b.WriteString(":")
		if m.Err != nil {
			fmt.Fprintf(&b, "\n    %v", m.Err)
		}
		for _, f := range m.Errs {
			if f.Field == "" {
				fmt.Fprintf(&b, "\n    %s", f.Detail)
			} else {
				fmt.Fprintf(&b, "\n    %s: %s", f.Field, f.Detail)
			}
		}
	}
	return b.String()
}

// manifestExts are the files a directory given to -f contributes.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true}

// readManifests reads every object in paths: files, directories (every
// *.yaml, *.yml and *.json below them) and "-" for stdin. Documents that
// do not decode come back with their errors; the error return is for
// files that cannot be read at all.
func readManifests(paths []string, stdin io.Reader) ([]*manifest, error) {
	var out []*manifest
	readStdin := false
	for _, p := range paths {
		if p == "-" {
			if readStdin {
				continue
			}
			readStdin = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading stdin: %w", err)
			}
			out = append(out, parseManifests("-", data)...)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		var files []string
		if st.IsDir() {
			err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() && manifestExts[strings.ToLower(filepath.Ext(path))] {
					files = append(files, path)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		} else {
			files = []string{p}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, parseManifests(f, data)...)
		}
	}
	return out, nil
}

// parseManifests decodes every document of one file.
func parseManifests(name string, data []byte) []*manifest {
	var out []*manifest
	for i, doc := range splitDocuments(data) {
		src := fmt.Sprintf("%s (document %d)", name, i+1)
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			out = append(out, &manifest{Source: src, Err: fmt.Errorf("not valid YAML: %w", err)})
			continue
		}
		// A List of objects, as `hearth get -o yaml` prints, applies
		// item by item.
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if json.Unmarshal(js, &list) == nil && list.Kind == "List" {
			for j, it := range list.Items {
				out = append(out, decodeManifest(fmt.Sprintf("%s item %d", src, j), it))
			}
			continue
		}
		out = append(out, decodeManifest(src, js))
	}
	return out
}

// decodeManifest decodes one object strictly. When it fails only because
// of unknown fields, it still decodes the rest leniently so validation
// can report the other mistakes of the document in the same run.
func decodeManifest(src string, js []byte) *manifest {
	m := &manifest{Source: src, Raw: js}
	obj, err := api.Decode(js)
	if err != nil {
		var fes api.FieldErrors
		if errors.As(err, &fes) {
			m.Errs = append(m.Errs, fes...)
		} else {
			m.Err = err
		}
	}
	if obj == nil {
		var tm api.TypeMeta
		_ = json.Unmarshal(js, &tm)
		if lenient, err := api.NewObject(tm.Kind); err == nil && json.Unmarshal(js, lenient) == nil {
			obj = lenient
		}
	}
	m.Obj = obj
	return m
}

// splitDocuments splits multi-document YAML on "---" lines and drops
// documents that hold nothing but blanks and comments.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	content := false
	flush := func() {
		if content {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
		content = false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if isSeparator(line) {
			flush()
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") && t != "..." {
			content = true
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func isSeparator(line string) bool {
	if !strings.HasPrefix(line, "---") {
		return false
	}
	rest := line[3:]
	return strings.TrimSpace(rest) == "" || rest[0] == ' ' || rest[0] == '\t'
}

// validateManifests fills in the tenant of tenant-scoped objects that
// name none, then checks each object as the server will on create, and
// that no object appears twice. It returns the documents with errors.
func validateManifests(ms []*manifest, defaultTenant string) []*manifest {
	seen := map[string]string{}
	var bad []*manifest
	for _, m := range ms {
		if m.Obj != nil {
			k, err := api.KindByName(m.Obj.GetTypeMeta().Kind)
			if err == nil {
				md := m.Obj.GetMetadata()
				if k.Scope == api.TenantScoped && md.Tenant == "" {
					md.Tenant = defaultTenant
				}
				// Unknown fields were already reported; a document that
				// did not decode otherwise is not worth validating.
				if m.Err == nil {
					es := api.Prepare(api.DeepCopy(m.Obj), nil)
					for _, e := range es {
						if e.Field == "metadata.tenant" && md.Tenant == "" {
							e.Detail += " (set metadata.tenant, or use --tenant)"
						}
						if !slices.Contains(m.Errs, e) {
							m.Errs = append(m.Errs, e)
						}
					}
				}
				key := objectKey(m.Obj)
				if prev, dup := seen[key]; dup {
					m.Errs = append(m.Errs, api.FieldError{Field: "metadata.name", Detail: fmt.Sprintf("%s is also defined in %s", displayName(m.Obj), prev)})
				} else {
					seen[key] = m.Source
				}
			}
		}
		if m.failed() {
			bad = append(bad, m)
		}
	}
	return bad
}

// objectKey identifies an object across kinds and tenants.
func objectKey(obj api.Object) string {
	m := obj.GetMetadata()
	return obj.GetTypeMeta().Kind + "/" + m.Tenant + "/" + m.Name
}

// kindOrder is the order apply creates kinds in, so that one file can
// build a whole lab: what others refer to comes first. Delete goes the
// other way. Kinds not listed come after these, by name.
var kindOrder = []string{
	"Tenant",
	"Site",
	"User",
	"Secret",
	"StoragePool",
	"ExternalNetwork",
	"Image",
	"MachineProfile",
	"Host",
	"Machine",
	"SSHKey",
	"SecurityGroup",
	"Network",
	"Subnet",
	"Volume",
	"Snapshot",
	"VirtualMachineSet",
	"VirtualMachine",
	"FloatingIP",
	"Event",
}

func kindRank(kind string) int {
	for i, k := range kindOrder {
		if k == kind {
			return i
		}
	}
	return len(kindOrder)
}

// sortManifests orders objects for creation: by kind rank, unknown kinds
// by name, otherwise keeping the files' order.
func sortManifests(ms []*manifest) {
	sort.SliceStable(ms, func(i, j int) bool {
		a, b := ms[i].Obj.GetTypeMeta().Kind, ms[j].Obj.GetTypeMeta().Kind
		ra, rb := kindRank(a), kindRank(b)
		if ra != rb {
			return ra < rb
		}
		if ra == len(kindOrder) {
			return a < b
		}
		return false
	})
}
