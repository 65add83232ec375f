package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newDescribeCmd) }

func newDescribeCmd(g *globals) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "describe KIND [NAME...] | KIND/NAME...",
		Short: "Show objects in detail, with their conditions and events",
		Long: `Show objects for people: metadata, spec and status, conditions, and the
events recorded about them (the first place to look when something is not
becoming Ready). Without names, describe every object of the kind.`,
		Example: `  hearth describe vm web-1
  hearth describe host/h1`,
		ValidArgsFunction: completeKindAndNames(g, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			first := true
			for _, t := range targets {
				var objs []api.Object
				if len(t.names) == 0 {
					if objs, _, err = c.List(ctx, t.kind.Kind, g.readTenant(t.kind), client.ListOptions{LabelSelector: selector}); err != nil {
						return err
					}
					if len(objs) == 0 {
						g.noResources(c, t.kind, false)
					}
				}
				for _, name := range t.names {
					obj, err := c.Get(ctx, t.kind.Kind, g.readTenant(t.kind), name)
					if err != nil {
						return err
					}
					objs = append(objs, obj)
				}
				for _, obj := range objs {
					if !first {
						fmt.Fprintln(g.out)
					}
					first = false
					events, everr := eventsFor(ctx, c, obj)
					allocs, aerr := allocationsOf(ctx, c, obj)
					sec, serr := securityRulesOf(ctx, c, obj)
					describe(g.out, t.kind, obj, describeExtra{allocations: allocs, allocationsErr: aerr, events: events, eventsErr: everr,
						security: sec, securityErr: serr}, time.Now())
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "describe the objects matching this label selector")
	return cmd
}

// eventsFor lists the events about obj, oldest first.
func eventsFor(ctx context.Context, c *client.Client, obj api.Object) ([]*api.Event, error) {
	m := obj.GetMetadata()
	kind := obj.GetTypeMeta().Kind
	objs, _, err := c.List(ctx, "Event", m.Tenant, client.ListOptions{
		FieldSelector: "spec.involvedObject.kind=" + kind + ",spec.involvedObject.name=" + m.Name,
	})
	if err != nil {
		return nil, err
	}
	var out []*api.Event
	for _, o := range objs {
		ev := o.(*api.Event)
		// The cluster level lists every tenant's events; and events of
		// an earlier object of the same name are not about this one.
		if ev.Metadata.Tenant != m.Tenant || (ev.Spec.InvolvedObject.UID != "" && m.UID != "" && ev.Spec.InvolvedObject.UID != m.UID) {
			continue
		}
		out = append(out, ev)
	}
	sortEvents(out)
	return out, nil
}

// eventTime is when an event last happened.
func eventTime(ev *api.Event) *time.Time {
	switch {
	case ev.Spec.LastTimestamp != nil:
		return ev.Spec.LastTimestamp
	case ev.Spec.FirstTimestamp != nil:
		return ev.Spec.FirstTimestamp
	}
	return ev.Metadata.CreationTimestamp
}

// sortEvents orders events oldest first by when they last happened.
func sortEvents(evs []*api.Event) {
	sort.SliceStable(evs, func(i, j int) bool {
		a, b := eventTime(evs[i]), eventTime(evs[j])
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		return a.Before(*b)
	})
}

// labelWidth aligns describe's values: the longest label and two spaces.
const labelWidth = len("Owner References:") + 2

// describe writes one object for people.
// describeExtra is what describe shows besides the object: who holds the
// addresses it hands out (allocationsOf), and the events about it.
type describeExtra struct {
	allocations    [][]string
	allocationsErr error
	events         []*api.Event
	eventsErr      error
	// security is a VM's Security Rules table (describe_secgroups.go).
	security    [][]string
	securityErr error
}

func describe(w io.Writer, k *api.KindInfo, obj api.Object, x describeExtra, now time.Time) {
	events, eventsErr := x.events, x.eventsErr
	m := obj.GetMetadata()
	field := func(name, value string) { fmt.Fprintf(w, "%-*s%s\n", labelWidth, name+":", value) }
	multi := func(name string, values []string) {
		if len(values) == 0 {
			field(name, "<none>")
			return
		}
		for i, v := range values {
			if i == 0 {
				field(name, v)
			} else {
				field("", v)
			}
		}
	}
	pairs := func(mp map[string]string) []string {
		var out []string
		for k, v := range mp {
			out = append(out, k+"="+v)
		}
		sort.Strings(out)
		return out
	}
	when := func(t *time.Time) string {
		if t == nil {
			return "<unknown>"
		}
		return t.Local().Format(time.RFC3339) + " (" + api.Age(t, now) + " ago)"
	}

	field("Name", m.Name)
	field("Kind", obj.GetTypeMeta().Kind)
	if k.HasTenant() {
		t := m.Tenant
		if t == "" {
			t = "<none>"
		}
		field("Tenant", t)
	}
	multi("Labels", pairs(m.Labels))
	// What apply recorded is the whole file over again: say that it is
	// there, and where to read it.
	ann := m.Annotations
	if v, ok := ann[api.LastAppliedAnnotation]; ok {
		ann = maps.Clone(ann)
		ann[api.LastAppliedAnnotation] = fmt.Sprintf("(what apply last wrote, %d bytes: see -o yaml)", len(v))
	}
	multi("Annotations", pairs(ann))
	field("UID", m.UID)
	field("Created", when(m.CreationTimestamp))
	if m.UpdateTimestamp != nil {
		field("Updated", when(m.UpdateTimestamp))
	}
	if m.DeletionTimestamp != nil {
		field("Deleting since", when(m.DeletionTimestamp))
	}
	field("ResourceVersion", m.ResourceVersion)
	field("Generation", strconv.FormatInt(m.Generation, 10))
	multi("Finalizers", m.Finalizers)
	var owners []string
	for _, o := range m.OwnerReferences {
		s := o.Kind + "/" + o.Name
		if o.Controller {
			s += " (controller)"
		}
		owners = append(owners, s)
	}
	multi("Owner References", owners)

	if spec := indentYAML(maskedSpec(obj), "  "); spec != "" {
		fmt.Fprintf(w, "Spec:\n%s", spec)
	} else {
		field("Spec", "<none>")
	}

	// Conditions get their own table; the rest of the status is YAML.
	var status map[string]any
	data, _ := json.Marshal(obj.StatusAny())
	_ = json.Unmarshal(data, &status)
	delete(status, "conditions")
	if s := indentYAML(status, "  "); len(status) > 0 && s != "" {
		fmt.Fprintf(w, "Status:\n%s", s)
	} else {
		field("Status", "<none>")
	}

	conds := obj.CommonStatus().Conditions
	if len(conds) == 0 {
		field("Conditions", "<none>")
	} else {
		rows := [][]string{{"TYPE", "STATUS", "REASON", "MESSAGE", "AGE"}}
		for _, c := range conds {
			rows = append(rows, []string{c.Type, string(c.Status), c.Reason, c.Message, api.Age(c.LastTransitionTime, now)})
		}
		fmt.Fprintln(w, "Conditions:")
		writeIndentedTable(w, rows)
	}

	switch {
	case x.allocationsErr != nil:
		field("Allocations", fmt.Sprintf("<cannot list: %v>", x.allocationsErr))
	case len(x.allocations) == 1:
		field("Allocations", "<none>")
	case len(x.allocations) > 1:
		fmt.Fprintln(w, "Allocations:")
		writeIndentedTable(w, x.allocations)
	}

	switch {
	case x.securityErr != nil:
		field("Security Rules", fmt.Sprintf("<cannot list: %v>", x.securityErr))
	case len(x.security) > 1:
		fmt.Fprintln(w, "Security Rules:")
		writeIndentedTable(w, x.security)
	}

	switch {
	case eventsErr != nil:
		field("Events", fmt.Sprintf("<cannot list: %v>", eventsErr))
	case len(events) == 0:
		field("Events", "<none>")
	default:
		rows := [][]string{{"TYPE", "REASON", "AGE", "FROM", "COUNT", "MESSAGE"}}
		for _, ev := range events {
			count := ev.Spec.Count
			if count == 0 {
				count = 1
			}
			rows = append(rows, []string{ev.Spec.Type, ev.Spec.Reason, api.Age(eventTime(ev), now), ev.Spec.Source, strconv.Itoa(count), ev.Spec.Message})
		}
		fmt.Fprintln(w, "Events:")
		writeIndentedTable(w, rows)
	}
}

// writeIndentedTable writes a table indented under a describe heading.
func writeIndentedTable(w io.Writer, rows [][]string) {
	var buf bytes.Buffer
	_ = writeTable(&buf, rows)
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		fmt.Fprintln(w, "  "+line)
	}
}

// maskedSpec is the spec a description shows: credentials a person reading
// it does not need on screen are hidden, as kubectl does (a Secret's
// values become their sizes; a BMC password and webhook header values
// become stars). `hearth get -o yaml` shows them, to those who may read
// them.
func maskedSpec(obj api.Object) any {
	switch o := obj.(type) {
	case *api.Secret:
		data := map[string]string{}
		for k, v := range o.Spec.Data {
			data[k] = fmt.Sprintf("%d bytes", len(v))
		}
		return map[string]any{"type": o.Spec.Type, "data": data}
	case *api.Machine:
		c := api.DeepCopy(o).(*api.Machine)
		p := &c.Spec.Power
		if p.Password != "" {
			p.Password = "********"
		}
		if p.Webhook != nil {
			for k := range p.Webhook.Headers {
				p.Webhook.Headers[k] = "********"
			}
		}
		return c.SpecAny()
	}
	return obj.SpecAny()
}
