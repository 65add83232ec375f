package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	api "hearth.dev/hearth/api/v1alpha1"
)

// displayName is how the verbs name an object to people: network/net1.
func displayName(obj api.Object) string {
	return strings.ToLower(obj.GetTypeMeta().Kind) + "/" + obj.GetMetadata().Name
}

// outputFormats are the values of -o.
var outputFormats = []string{"table", "wide", "yaml", "json", "name"}

func checkOutput(format string) error {
	for _, f := range outputFormats {
		if f == format {
			return nil
		}
	}
	return fmt.Errorf("-o %s is not an output format (want one of %s)", format, strings.Join(outputFormats, ", "))
}

// tableOptions say which optional columns a table has.
type tableOptions struct {
	wide bool
	// showTenant puts a TENANT column first (lists across tenants).
	showTenant bool
	showLabels bool
	// kindPrefix names rows kind/name, for tables of several kinds.
	kindPrefix bool
	now        time.Time
}

// tableHeader is NAME, the kind's columns and AGE.
func tableHeader(k *api.KindInfo, o tableOptions) []string {
	var h []string
	if o.showTenant {
		h = append(h, "TENANT")
	}
	h = append(h, "NAME")
	for _, c := range k.Columns {
		if !c.Wide || o.wide {
			h = append(h, c.Name)
		}
	}
	h = append(h, "AGE")
	if o.showLabels {
		h = append(h, "LABELS")
	}
	return h
}

func tableRow(k *api.KindInfo, obj api.Object, o tableOptions) []string {
	m := obj.GetMetadata()
	var r []string
	if o.showTenant {
		r = append(r, m.Tenant)
	}
	if o.kindPrefix {
		r = append(r, displayName(obj))
	} else {
		r = append(r, m.Name)
	}
	for _, c := range k.Columns {
		if !c.Wide || o.wide {
			r = append(r, c.Get(obj))
		}
	}
	r = append(r, api.Age(m.CreationTimestamp, o.now))
	if o.showLabels {
		r = append(r, formatLabels(m.Labels))
	}
	return r
}

// formatLabels prints labels as k=v,k=v in key order.
func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

// cell keeps one value on one line of a table.
func cell(s string) string {
	return strings.NewReplacer("\n", " ", "\t", " ", "\r", "").Replace(s)
}

// writeTable prints rows aligned in columns, the first row being the
// header.
func writeTable(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// streamTable prints rows as they come, aligned with every row printed
// before (as tabwriter would, but without waiting for the end): a watch
// prints one row per change.
type streamTable struct {
	w      io.Writer
	widths []int
}

func (t *streamTable) write(rows ...[]string) {
	for _, r := range rows {
		for i, c := range r {
			if i >= len(t.widths) {
				t.widths = append(t.widths, 0)
			}
			t.widths[i] = max(t.widths[i], utf8.RuneCountInString(cell(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			c = cell(c)
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+3))
			}
		}
		b.WriteByte('\n')
		_, _ = io.WriteString(t.w, b.String())
	}
}

// objectList is how several objects print as YAML or JSON, and what
// apply reads back.
type objectList struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Items      []api.Object `json:"items"`
}

// printObjects prints objects as yaml, json or names. single prints the
// one object itself rather than a List of it.
func printObjects(w io.Writer, format string, objs []api.Object, single bool) error {
	if format == "name" {
		for _, o := range objs {
			fmt.Fprintln(w, displayName(o))
		}
		return nil
	}
	var v any
	if single && len(objs) == 1 {
		v = objs[0]
	} else {
		items := objs
		if items == nil {
			items = []api.Object{}
		}
		v = objectList{APIVersion: api.APIVersion, Kind: "List", Items: items}
	}
	return printValue(w, format, v)
}

// printValue prints any value as yaml or json.
func printValue(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		data, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return fmt.Errorf("-o %s is not supported here (want yaml or json)", format)
}

// indentYAML renders v as YAML indented by prefix, for describe.
func indentYAML(v any, prefix string) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return prefix + "<" + err.Error() + ">\n"
	}
	s := strings.TrimRight(string(data), "\n")
	if s == "{}" || s == "null" || s == "" {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		b.WriteString(prefix + line + "\n")
	}
	return b.String()
}
