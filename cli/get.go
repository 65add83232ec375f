package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newGetCmd) }

type getOptions struct {
	output        string
	watch         bool
	selector      string
	fieldSelector string
	allTenants    bool
	showLabels    bool
}

func newGetCmd(g *globals) *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...] | KIND/NAME...",
		Short: "List objects, or show some by name",
		Long: `List the objects of a kind as a table, or print them as YAML or JSON.

KIND is a kind, its plural or a short name (see ` + "`hearth api-resources`" + `);
several kinds may be listed at once as KIND,KIND. Tenant-scoped kinds list
the --tenant or context tenant, or every tenant with -A.`,
		Example: `  hearth get networks
  hearth get vm web-1 -o yaml
  hearth get subnets -A -l env=lab
  hearth get network/net1 subnet/a
  hearth get hosts -w`,
		ValidArgsFunction: completeKindAndNames(g, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), g, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, wide, yaml, json or name")
	f.BoolVarP(&o.watch, "watch", "w", false, "after listing, print changes as they happen")
	f.StringVarP(&o.selector, "selector", "l", "", "label selector, such as env=lab,tier!=db")
	f.StringVar(&o.fieldSelector, "field-selector", "", "field selector, such as spec.host=h1")
	f.BoolVarP(&o.allTenants, "all-tenants", "A", false, "list across every tenant")
	f.BoolVar(&o.showLabels, "show-labels", false, "add a LABELS column")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runGet(ctx context.Context, g *globals, o getOptions, args []string) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if o.selector != "" {
		if _, err := api.ParseSelector(o.selector); err != nil {
			return err
		}
	}
	targets, err := parseTargets(args)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	if o.watch {
		if len(targets) != 1 {
			return errors.New("-w watches one kind at a time")
		}
		return watchGet(ctx, g, c, o, targets[0])
	}

	var all []api.Object
	var failed []error
	named := 0
	now := time.Now()
	for i, t := range targets {
		named += len(t.names)
		objs, err := g.fetch(ctx, c, o, t)
		if err != nil {
			var fe fetchErrors
			if !errors.As(err, &fe) {
				return err
			}
			failed = append(failed, fe...)
		}
		all = append(all, objs...)
		if len(objs) == 0 && !o.allTenants {
			// Nothing found may mean the tenant is a typo.
			if t := g.shownTenant(c, t.kind); t != "" {
				if err := tenantExists(ctx, c, t); err != nil {
					return err
				}
			}
		}
		if o.output != "table" && o.output != "wide" {
			continue
		}
		if len(objs) == 0 {
			if len(t.names) == 0 {
				g.noResources(c, t.kind, o.allTenants)
			}
			continue
		}
		if i > 0 {
			fmt.Fprintln(g.out)
		}
		topt := tableOptions{wide: o.output == "wide", showTenant: g.showTenant(t.kind, o.allTenants), showLabels: o.showLabels,
			kindPrefix: len(targets) > 1, now: now}
		rows := [][]string{tableHeader(t.kind, topt)}
		for _, obj := range objs {
			rows = append(rows, tableRow(t.kind, obj, topt))
		}
		if err := writeTable(g.out, rows); err != nil {
			return err
		}
	}
	if o.output != "table" && o.output != "wide" {
		single := len(targets) == 1 && named == 1
		if !single || len(all) > 0 {
			if err := printObjects(g.out, o.output, all, single); err != nil {
				return err
			}
		}
	}
	switch {
	case len(failed) == 1 && len(all) == 0:
		return failed[0]
	case len(failed) > 0:
		for _, e := range failed {
			printError(g.errOut, e)
		}
		return fmt.Errorf("%d of the objects asked for could not be read", len(failed))
	}
	return nil
}

// fetchErrors are the names get could not read; the others still print.
type fetchErrors []error

func (e fetchErrors) Error() string { return errors.Join(e...).Error() }

// fetch lists a target's kind, or reads its named objects.
func (g *globals) fetch(ctx context.Context, c *client.Client, o getOptions, t target) ([]api.Object, error) {
	lo := client.ListOptions{LabelSelector: o.selector, FieldSelector: o.fieldSelector, AllTenants: o.allTenants}
	tenant := g.readTenant(t.kind)
	if len(t.names) == 0 || o.allTenants || o.selector != "" || o.fieldSelector != "" {
		objs, _, err := c.List(ctx, t.kind.Kind, tenant, lo)
		if err != nil || len(t.names) == 0 {
			return objs, err
		}
		// Names with -A or selectors: every object of those names.
		var out []api.Object
		for _, obj := range objs {
			if slices.Contains(t.names, obj.GetMetadata().Name) {
				out = append(out, obj)
			}
		}
		return out, nil
	}
	var out []api.Object
	var errs fetchErrors
	for _, name := range t.names {
		obj, err := c.Get(ctx, t.kind.Kind, tenant, name)
		if err != nil {
			if !api.IsNotFound(err) && len(t.names) == 1 {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, obj)
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}

// showTenant says whether a list of k spans tenants and so needs a TENANT
// column.
func (g *globals) showTenant(k *api.KindInfo, allTenants bool) bool {
	if !k.HasTenant() {
		return false
	}
	return allTenants || (k.Scope == api.TenantOptional && g.tenant == "")
}

func (g *globals) noResources(c *client.Client, k *api.KindInfo, allTenants bool) {
	if t := g.shownTenant(c, k); t != "" && !allTenants {
		fmt.Fprintf(g.errOut, "No resources found in tenant %s.\n", t)
		return
	}
	fmt.Fprintln(g.errOut, "No resources found.")
}

// watchGet lists, then prints every change from the list's version on.
func watchGet(ctx context.Context, g *globals, c *client.Client, o getOptions, t target) error {
	lo := client.ListOptions{LabelSelector: o.selector, FieldSelector: o.fieldSelector, AllTenants: o.allTenants}
	tenant := g.readTenant(t.kind)
	topt := tableOptions{wide: o.output == "wide", showTenant: g.showTenant(t.kind, o.allTenants), showLabels: o.showLabels}
	table := &streamTable{w: g.out}
	headerDone := false
	seen := map[string]string{} // key → resourceVersion printed
	wanted := func(obj api.Object) bool {
		return len(t.names) == 0 || slices.Contains(t.names, obj.GetMetadata().Name)
	}
	show := func(objs ...api.Object) {
		var picked []api.Object
		for _, obj := range objs {
			if wanted(obj) {
				picked = append(picked, obj)
			}
		}
		if len(picked) == 0 {
			return
		}
		switch o.output {
		case "table", "wide":
			topt.now = time.Now()
			var rows [][]string
			if !headerDone {
				rows = append(rows, tableHeader(t.kind, topt))
				headerDone = true
			}
			for _, obj := range picked {
				rows = append(rows, tableRow(t.kind, obj, topt))
			}
			table.write(rows...)
		case "yaml":
			for _, obj := range picked {
				fmt.Fprintln(g.out, "---")
				_ = printValue(g.out, "yaml", obj)
			}
		default: // json and name: one object at a time
			for _, obj := range picked {
				_ = printObjects(g.out, o.output, []api.Object{obj}, true)
			}
		}
	}
	list := func(ctx context.Context) (string, error) {
		objs, rv, err := c.List(ctx, t.kind.Kind, tenant, lo)
		if err != nil {
			return "", err
		}
		var changed []api.Object
		for _, obj := range objs {
			key := client.Key(obj)
			if seen[key] != obj.GetMetadata().ResourceVersion {
				seen[key] = obj.GetMetadata().ResourceVersion
				changed = append(changed, obj)
			}
		}
		show(changed...)
		return rv, nil
	}
	rv, err := list(ctx)
	if err != nil {
		return err
	}
	if len(seen) == 0 && !o.allTenants {
		if t := g.shownTenant(c, t.kind); t != "" {
			if err := tenantExists(ctx, c, t); err != nil {
				return err
			}
		}
	}
	if len(seen) == 0 && (o.output == "table" || o.output == "wide") {
		g.noResources(c, t.kind, o.allTenants)
	}
	return follow(ctx, c, t.kind.Kind, tenant, lo, rv, func(ev client.Event) {
		key := client.Key(ev.Object)
		if ev.Type == "DELETED" {
			delete(seen, key)
		} else {
			seen[key] = ev.ResourceVersion
		}
		show(ev.Object)
	}, list)
}
