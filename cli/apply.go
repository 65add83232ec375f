package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newApplyCmd) }

type applyOptions struct {
	files    []string
	prune    bool
	selector string
	dryRun   bool
}

func newApplyCmd(g *globals) *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply -f PATH...",
		Short: "Create or update objects from YAML or JSON files",
		Long: `Create or update the objects in files, directories (every *.yaml, *.yml and
*.json below them) or stdin (-f -). A file may hold several YAML documents
separated by --- lines, or a List.

Every document is checked before anything is written: if any is invalid,
every problem is printed and nothing changes. Objects are then applied in
dependency order (tenants, sites and users first; networks before their
subnets; ...), so one file can describe a whole lab.

Tenant-scoped objects without metadata.tenant go to --tenant, or to the
context's tenant.

With --prune -l SELECTOR, objects of the kinds in the files, in the tenants
the files touch, that match the selector and are not in the files are
deleted afterwards.`,
		Example: `  hearth apply -f lab.yaml
  hearth apply -f lab/ --prune -l lab=home
  cat vm.yaml | hearth apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runApply(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "file, directory or - (stdin) to apply; repeatable")
	f.BoolVar(&o.prune, "prune", false, "delete objects matching -l that are not in the files")
	f.StringVarP(&o.selector, "selector", "l", "", "label selector that --prune deletes within")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would happen without changing anything")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	return cmd
}

func runApply(ctx context.Context, g *globals, o applyOptions) error {
	if o.prune && o.selector == "" {
		return errors.New("--prune needs -l SELECTOR: without one it would delete every object of these kinds that is not in the files")
	}
	if !o.prune && o.selector != "" {
		return errors.New("-l selects what --prune deletes; it does nothing without --prune")
	}
	if o.selector != "" {
		if _, err := api.ParseSelector(o.selector); err != nil {
			return err
		}
	}
	ms, err := readManifests(o.files, g.in)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("no objects found in %v", o.files)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	if bad := validateManifests(ms, c.Tenant); len(bad) > 0 {
		return &manifestErrors{bad: bad, total: len(ms)}
	}
	sortManifests(ms)

	suffix := ""
	if o.dryRun {
		suffix = " (dry run)"
	}
	failed := 0
	for _, m := range ms {
		result, err := applyOne(ctx, c, m.Obj, o.dryRun)
		if err != nil {
			failed++
			printError(g.errOut, fmt.Errorf("%s: %w", m.Source, err))
			continue
		}
		fmt.Fprintf(g.out, "%s %s%s\n", displayName(m.Obj), result, suffix)
	}
	if failed > 0 {
		if o.prune {
			fmt.Fprintln(g.errOut, "Not pruning: some objects failed to apply.")
		}
		return fmt.Errorf("%d of %d objects failed to apply", failed, len(ms))
	}
	if o.prune {
		return prune(ctx, g, c, ms, o.selector, o.dryRun)
	}
	return nil
}

// applyOne creates obj, or updates the stored object to match it. It
// returns "created", "configured" or "unchanged".
func applyOne(ctx context.Context, c *client.Client, obj api.Object, dryRun bool) (string, error) {
	kind, md := obj.GetTypeMeta().Kind, obj.GetMetadata()
	var err error
	// A conflict means someone wrote the object between our read and
	// our write: read it again and retry.
	for attempt := 0; attempt < 5; attempt++ {
		var cur api.Object
		cur, err = c.Get(ctx, kind, md.Tenant, md.Name)
		if api.IsNotFound(err) {
			if dryRun {
				return "created", nil
			}
			if _, err = c.Create(ctx, obj); api.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return "", err
			}
			return "created", nil
		}
		if err != nil {
			return "", err
		}
		next := desired(obj, cur)
		if dryRun {
			if wouldChange(next, cur) {
				return "configured", nil
			}
			return "unchanged", nil
		}
		var out api.Object
		out, err = c.Update(ctx, next)
		if api.IsConflict(err) {
			continue
		}
		if err != nil {
			return "", err
		}
		if out.GetMetadata().ResourceVersion == cur.GetMetadata().ResourceVersion {
			return "unchanged", nil
		}
		return "configured", nil
	}
	return "", err
}

// desired is the object to write over cur: the file's spec, labels and
// annotations, on cur's resourceVersion and status. Finalizers and owner
// references belong to controllers unless the file sets them.
func desired(obj, cur api.Object) api.Object {
	next := api.DeepCopy(obj)
	nm, cm := next.GetMetadata(), cur.GetMetadata()
	nm.ResourceVersion = cm.ResourceVersion
	if nm.Finalizers == nil {
		nm.Finalizers = cm.Finalizers
	}
	if nm.OwnerReferences == nil {
		nm.OwnerReferences = cm.OwnerReferences
	}
	reflect.ValueOf(next.StatusAny()).Elem().Set(reflect.ValueOf(cur.StatusAny()).Elem())
	return next
}

// wouldChange guesses, for --dry-run, whether an update would change
// anything: the spec after defaults, labels or annotations.
func wouldChange(next, cur api.Object) bool {
	d := api.DeepCopy(next)
	api.Prepare(d, cur)
	nm, cm := d.GetMetadata(), cur.GetMetadata()
	return !api.SpecEqual(d, cur) || !maps.Equal(nm.Labels, cm.Labels) || !maps.Equal(nm.Annotations, cm.Annotations) ||
		!slices.Equal(nm.Finalizers, cm.Finalizers)
}

// prune deletes objects of the files' kinds, in the tenants the files
// touch, that match selector and are not in the files. Objects a
// controller owns (a set's VMs) are its business and are left alone.
func prune(ctx context.Context, g *globals, c *client.Client, ms []*manifest, selector string, dryRun bool) error {
	keep := map[string]bool{}
	kinds := map[string]bool{}
	touched := map[string]bool{}
	tenantsOf := map[string]map[string]bool{} // kind → tenants in the files
	for _, m := range ms {
		kind, t := m.Obj.GetTypeMeta().Kind, m.Obj.GetMetadata().Tenant
		keep[objectKey(m.Obj)] = true
		kinds[kind] = true
		if t != "" {
			touched[t] = true
		}
		if tenantsOf[kind] == nil {
			tenantsOf[kind] = map[string]bool{}
		}
		tenantsOf[kind][t] = true
	}
	order := slices.Collect(maps.Keys(kinds))
	// Dependents go first, as delete does.
	slices.SortFunc(order, func(a, b string) int {
		if ra, rb := kindRank(a), kindRank(b); ra != rb {
			return rb - ra
		}
		if a < b {
			return 1
		}
		return -1
	})
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	var failed int
	for _, kind := range order {
		k, _ := api.KindByName(kind)
		var tenants []string
		switch k.Scope {
		case api.ClusterScoped:
			tenants = []string{""}
		case api.TenantScoped:
			tenants = slices.Sorted(maps.Keys(touched))
		case api.TenantOptional:
			set := maps.Clone(tenantsOf[kind])
			maps.Copy(set, touched)
			tenants = slices.Sorted(maps.Keys(set))
		}
		for _, t := range tenants {
			objs, _, err := c.List(ctx, kind, t, client.ListOptions{LabelSelector: selector})
			if err != nil {
				return fmt.Errorf("listing %s to prune: %w", k.Plural, err)
			}
			for _, obj := range objs {
				md := obj.GetMetadata()
				// The cluster level of a TenantOptional kind lists
				// every tenant's objects too.
				if md.Tenant != t || keep[objectKey(obj)] || md.DeletionTimestamp != nil || controlled(md) {
					continue
				}
				if !dryRun {
					if _, err := c.Delete(ctx, kind, md.Tenant, md.Name); err != nil && !api.IsNotFound(err) {
						failed++
						printError(g.errOut, fmt.Errorf("pruning %s: %w", displayName(obj), err))
						continue
					}
				}
				fmt.Fprintf(g.out, "%s pruned%s\n", displayName(obj), suffix)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d objects could not be pruned", failed)
	}
	return nil
}

// controlled reports whether a controller owns the object.
func controlled(md *api.ObjectMeta) bool {
	for _, o := range md.OwnerReferences {
		if o.Controller {
			return true
		}
	}
	return false
}
