package profile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"
	"unicode/utf8"

	yaml "sigs.k8s.io/yaml/goyaml.v3"

	"hearth.dev/hearth/cloudinit"
)

// MaxOutput caps what one template may render, so a runaway range cannot
// exhaust the boot service's memory.
const MaxOutput = 1 << 20

// funcs are the functions templates may call, beside text/template's own
// (and, or, not, len, index, print, printf, eq, ...). Each is documented in
// docs/BOOT-TEMPLATES.md; change the two together.
var funcs = template.FuncMap{
	// join SEP LIST: the strings of LIST joined by SEP.
	"join": func(sep string, list []string) string { return strings.Join(list, sep) },
	// default DEFAULT VALUE: VALUE, or DEFAULT when VALUE is empty.
	"default": func(def, v any) any {
		if empty(v) {
			return def
		}
		return v
	},
	// required MESSAGE VALUE: VALUE, or fail with MESSAGE when it is empty.
	"required": func(msg string, v any) (any, error) {
		if empty(v) {
			return nil, errors.New(msg)
		}
		return v, nil
	},
	// quote S: S as a double-quoted string that JSON and YAML both read
	// as S.
	"quote": func(v any) string { return cloudinit.Quote(toString(v)) },
	// squote S: S single-quoted for a POSIX shell.
	"squote": func(v any) string { return "'" + strings.ReplaceAll(toString(v), "'", `'\''`) + "'" },
	// indent N S: S with N spaces before every line.
	"indent": func(n int, v any) string {
		pad := strings.Repeat(" ", max(n, 0))
		return pad + strings.ReplaceAll(toString(v), "\n", "\n"+pad)
	},
	// toYAML V: V as YAML, without the final newline.
	"toYAML": toYAML,
	// toJSON V: V as compact JSON.
	"toJSON": func(v any) (string, error) { return marshalJSON(v) },
	"lower":  strings.ToLower,
	"upper":  strings.ToUpper,
	// safeWord S: S, or fail unless it is one safe boot word (CheckWord).
	// Kernel args and iPXE scripts apply it to every action by themselves.
	"safeWord": func(v any) (string, error) {
		s := toString(v)
		if why := CheckWord(s); why != "" {
			return "", fmt.Errorf("%q is not a safe boot word: %s", truncate(s), why)
		}
		return s, nil
	},
	guardFunc: guardWord,
}

// guardFunc is the function the boot contexts append to every action; its
// name cannot clash with a field or a documented function.
const guardFunc = "hearthGuardWord"

// Render renders a template with v as its dot. It is the renderer for a
// profile's files: what the template prints is not restricted.
func Render(tmpl string, v Values) (string, error) {
	return render("template", tmpl, v, false)
}

// renderWords renders a template for a boot context (kernel args, iPXE
// script): every action must print one safe boot word.
func renderWords(name, tmpl string, v Values) (string, error) {
	return render(name, tmpl, v, true)
}

func render(name, text string, v Values, words bool) (string, error) {
	t, err := template.New(name).Funcs(funcs).Option("missingkey=zero").Parse(text)
	if err != nil {
		return "", err
	}
	if words {
		for _, tt := range t.Templates() {
			if tt.Tree != nil {
				guardActions(tt.Tree, tt.Tree.Root)
			}
		}
	}
	var out limitedBuffer
	if err := t.Execute(&out, v); err != nil {
		var unsafe *UnsafeValueError
		if errors.As(err, &unsafe) {
			return "", unsafe
		}
		return "", err
	}
	return out.String(), nil
}

// UnsafeValueError is a template action that printed something that is
// not one safe boot word into kernel args or an iPXE script.
type UnsafeValueError struct {
	// Where is template:line:column of the action.
	Where string
	// Action is the action as written ("{{.Machine.Hostname}}").
	Action string
	Value  string
	// Why says what is wrong with the value.
	Why string
}

func (e *UnsafeValueError) Error() string {
	return fmt.Sprintf("%s: %s printed %q, which cannot go into kernel args or an iPXE script: %s", e.Where, e.Action, truncate(e.Value), e.Why)
}

// CheckWord returns why s cannot be printed by a template action into
// kernel args or an iPXE script, or "" if it can. The rules follow iPXE's
// parser: a script is split into lines at '\n' (a trailing '\r' dropped,
// a trailing '\\' joining the next line), lines into words at whitespace;
// the words ";", "||" and "&&" separate commands, a word starting with
// '#' comments out the rest of the line, and "${...}" is replaced by a
// setting's value. The kernel then splits its command line at spaces,
// honouring double quotes.
func CheckWord(s string) string {
	if !utf8.ValidString(s) {
		return "it is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r':
			return "it contains a line break"
		case unicode.IsSpace(r):
			return "it contains whitespace"
		case !unicode.IsPrint(r):
			return fmt.Sprintf("it contains the control character %U", r)
		case r == '\\':
			return "it contains a backslash"
		case r == '"':
			return "it contains a double quote"
		case r == ';' || r == '|':
			return fmt.Sprintf("it contains %q", r)
		}
	}
	switch {
	case strings.Contains(s, "${"):
		return `it contains "${", which iPXE would expand`
	case strings.Contains(s, "&&"), strings.HasPrefix(s, "&"), strings.HasSuffix(s, "&"):
		return `it contains "&&" or starts or ends with '&'`
	case strings.HasPrefix(s, "#"):
		return "it starts with '#'"
	}
	return ""
}

func guardWord(action string, v any) (string, error) {
	s := toString(v)
	if why := CheckWord(s); why != "" {
		where, act, _ := strings.Cut(action, "\x00")
		return "", &UnsafeValueError{Where: where, Action: act, Value: s, Why: why}
	}
	return s, nil
}

// guardActions appends the guard to every action that prints, the way
// html/template appends its escapers: the guard gets the action's
// location and text, then the value the action would print.
func guardActions(tree *parse.Tree, n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			guardActions(tree, c)
		}
	case *parse.IfNode:
		guardActions(tree, n.List)
		guardActions(tree, n.ElseList)
	case *parse.RangeNode:
		guardActions(tree, n.List)
		guardActions(tree, n.ElseList)
	case *parse.WithNode:
		guardActions(tree, n.List)
		guardActions(tree, n.ElseList)
	case *parse.ActionNode:
		if len(n.Pipe.Decl) > 0 {
			return // {{ $x := ... }} prints nothing
		}
		where, _ := tree.ErrorContext(n)
		ctx := &parse.StringNode{NodeType: parse.NodeString, Pos: n.Pos, Text: where + "\x00" + n.String()}
		ctx.Quoted = strconv.Quote(ctx.Text)
		n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: n.Pos,
			Args: []parse.Node{parse.NewIdentifier(guardFunc).SetPos(n.Pos), ctx}})
	}
}

// empty reports whether v is its type's zero value or an empty list or map.
func empty(v any) bool {
	if v == nil {
		return true
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Slice, reflect.Map, reflect.Array, reflect.String:
		return r.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return r.IsNil()
	}
	return r.IsZero()
}

// toString prints v as a template action would.
func toString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// toYAML writes v as YAML the way toJSON names its fields (through JSON),
// two spaces deep, and without folding long lines: an SSH key stays on one
// line, as people reading a cloud-config expect.
func toYAML(v any) (string, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var generic any
	if err := json.Unmarshal(j, &generic); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(yamlNode(generic)); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// yamlNode builds the YAML of a value decoded from JSON. A string is
// written plain only when it is a word no YAML reader can take for
// anything else; all others are double-quoted. Left to itself the encoder
// writes "yes" and "10:20" plain, which YAML 1.1 readers such as
// cloud-init's read as a boolean and a number, and multi-line strings as
// block scalars, whose indentation parsers disagree about when a line
// starts with a tab.
func yamlNode(v any) *yaml.Node {
	switch v := v.(type) {
	case map[string]any:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			n.Content = append(n.Content, yamlNode(k), yamlNode(v[k]))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, x := range v {
			n.Content = append(n.Content, yamlNode(x))
		}
		return n
	case string:
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
		if !plainYAML.MatchString(v) || yaml11Words[strings.ToLower(v)] {
			n.Style = yaml.DoubleQuotedStyle
		}
		return n
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(int64(v), 10)}
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: strconv.FormatFloat(v, 'g', -1, 64)}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
}

var plainYAML = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._/@-]*$`)

// yaml11Words are the plain words YAML 1.1 reads as booleans or null.
var yaml11Words = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true,
	"true": true, "false": true, "null": true}

func marshalJSON(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// limitedBuffer fails writes past MaxOutput, which stops the template.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxOutput {
		return 0, fmt.Errorf("the template renders more than %d bytes", MaxOutput)
	}
	return b.Buffer.Write(p)
}
