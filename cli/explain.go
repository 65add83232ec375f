package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
)

func init() { commands = append(commands, newExplainCmd) }

func newExplainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain KIND[.FIELD...]",
		Short: "Describe a kind or one of its fields",
		Long: `Describe a kind, or a field of it, and list the fields below it with their
types, as the server's OpenAPI document (/openapi/v3) has them: so what is
explained is what the server you talk to serves.`,
		Example: `  hearth explain vm
  hearth explain virtualmachine.spec.nics
  hearth explain subnet.spec.dhcp.rangeStart`,
		Args: cobra.ExactArgs(1),
		ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return kindCompletions(toComplete), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExplain(cmd.Context(), g, args[0])
		},
	}
}

// schemaDoc is a decoded OpenAPI document, as far as explain reads it.
type schemaDoc struct {
	Components struct {
		Schemas map[string]map[string]any `json:"schemas"`
	} `json:"components"`
}

func runExplain(ctx context.Context, g *globals, arg string) error {
	path := strings.Split(arg, ".")
	k, err := api.KindByName(path[0])
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	var doc schemaDoc
	if err := c.Do(ctx, http.MethodGet, "/openapi/v3", nil, &doc); err != nil {
		return fmt.Errorf("reading the server's OpenAPI document: %w", err)
	}
	schema, ok := doc.Components.Schemas[k.Kind]
	if !ok {
		return fmt.Errorf("the server does not serve %s (see `hearth api-resources`)", k.Kind)
	}
	where := k.Kind
	var field, typ string
	for _, name := range path[1:] {
		props, _ := doc.resolve(schema)["properties"].(map[string]any)
		next, ok := props[name].(map[string]any)
		if !ok {
			return fmt.Errorf("%s has no field %q; its fields are: %s", where, name, strings.Join(slices.Sorted(maps.Keys(props)), ", "))
		}
		where += "." + name
		field, typ, schema = name, doc.typeName(next), next
	}
	w := g.out
	fmt.Fprintf(w, "KIND:     %s\nVERSION:  %s\n\n", k.Kind, api.APIVersion)
	if field != "" {
		fmt.Fprintf(w, "FIELD:    %s <%s>\n\n", field, typ)
	}
	fmt.Fprintln(w, "DESCRIPTION:")
	writeWrapped(w, doc.description(schema), "     ")
	props, _ := doc.resolve(schema)["properties"].(map[string]any)
	if len(props) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nFIELDS:")
	for _, name := range slices.Sorted(maps.Keys(props)) {
		p := props[name].(map[string]any)
		fmt.Fprintf(w, "   %s\t<%s>\n", name, doc.typeName(p))
		if d := doc.description(p); d != "" {
			first, _, _ := strings.Cut(d, "\n\n")
			writeWrapped(w, first, "     ")
		}
		fmt.Fprintln(w)
	}
	return nil
}

// refName is the schema a $ref (or an allOf of one) names, or "".
func refName(s map[string]any) string {
	if r, ok := s["$ref"].(string); ok {
		return r[strings.LastIndexByte(r, '/')+1:]
	}
	if all, ok := s["allOf"].([]any); ok && len(all) == 1 {
		if inner, ok := all[0].(map[string]any); ok {
			return refName(inner)
		}
	}
	return ""
}

// resolve follows a schema to where its fields are: through references,
// lists' items and maps' values.
func (d *schemaDoc) resolve(s map[string]any) map[string]any {
	for range 8 {
		switch {
		case refName(s) != "":
			s = d.Components.Schemas[refName(s)]
		case s["items"] != nil:
			s, _ = s["items"].(map[string]any)
		case s["additionalProperties"] != nil:
			s, _ = s["additionalProperties"].(map[string]any)
		default:
			return s
		}
		if s == nil {
			return map[string]any{}
		}
	}
	return s
}

// typeName writes a schema's type the way Go would: string, []VMNIC,
// map[string]string, Object names.
func (d *schemaDoc) typeName(s map[string]any) string {
	if n := refName(s); n != "" {
		return n
	}
	switch t, _ := s["type"].(string); t {
	case "array":
		items, _ := s["items"].(map[string]any)
		return "[]" + d.typeName(items)
	case "object":
		if v, ok := s["additionalProperties"].(map[string]any); ok {
			return "map[string]" + d.typeName(v)
		}
		return "Object"
	case "":
		return "any"
	default:
		return t
	}
}

// description is a field's own description, else its type's (of a list
// or map, its elements').
func (d *schemaDoc) description(s map[string]any) string {
	if desc, _ := s["description"].(string); desc != "" {
		return desc
	}
	if n := refName(s); n != "" {
		desc, _ := d.Components.Schemas[n]["description"].(string)
		return desc
	}
	for _, elem := range []string{"items", "additionalProperties"} {
		if e, ok := s[elem].(map[string]any); ok {
			return d.description(e)
		}
	}
	return ""
}

// writeWrapped writes text wrapped at 80 columns, each line indented,
// keeping its paragraphs.
func writeWrapped(w io.Writer, text, indent string) {
	if text == "" {
		fmt.Fprintf(w, "%s<no description>\n", indent)
		return
	}
	for i, para := range strings.Split(text, "\n\n") {
		if i > 0 {
			fmt.Fprintln(w)
		}
		line := indent
		for _, word := range strings.Fields(para) {
			if len(line) > len(indent) && len(line)+1+len(word) > 80 {
				fmt.Fprintln(w, line)
				line = indent
			}
			if len(line) > len(indent) {
				line += " "
			}
			line += word
		}
		fmt.Fprintln(w, line)
	}
}
