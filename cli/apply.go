package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

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

Apply is declarative, as kubectl's is: each object remembers what its file
last said (annotation hearth.dev/last-applied-configuration). Re-applying
sets what the file sets, removes what the file set before and no longer
does, and leaves alone what the file never set: the host the scheduler
chose, the power state ` + "`hearth vm stop`" + ` set, labels added by hand.
Applying an unchanged file changes nothing and says "unchanged".

The server warns about names that name no object (a VM's security group
that does not exist yet); apply prints each warning and goes on. A VM's
NICs take their addresses in their network's subnet, so a VM whose
network or subnet does not exist is refused.

--dry-run sends every write to the server as a dry run: it is checked as
the real apply would be (permissions, validation, quotas, overlapping
subnets, addresses) and fails where it would fail, but nothing is
written. A VM whose network or subnet the same files create is reported
as not fully checked.

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
	f.BoolVar(&o.dryRun, "dry-run", false, "have the server check every change as the real apply would, and write nothing")
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

	if err := checkTenantsExist(ctx, c, ms); err != nil {
		return err
	}

	suffix := ""
	w := c
	if o.dryRun {
		suffix = " (dry run)"
		w = c.DryRun()
	}
	newTenants := tenantsCreatedBy(ctx, c, ms)
	failed := 0
	for _, m := range ms {
		// A dry run cannot ask the server about objects in a tenant the
		// same apply would create: there is no such tenant to check
		// against yet. They were validated above; say what was not done.
		if t := m.Obj.GetMetadata().Tenant; o.dryRun && newTenants[t] {
			fmt.Fprintf(g.out, "%s created%s; not checked by the server, since tenant %s is new\n", displayName(m.Obj), suffix, t)
			continue
		}
		var warnings []string
		result, err := applyOne(ctx, w.WithWarnings(func(msg string) { warnings = append(warnings, msg) }), m)
		for _, msg := range warnings {
			if o.dryRun && namesObjectInFiles(m.Obj, msg, ms) {
				continue // the real apply creates it first
			}
			fmt.Fprintf(g.errOut, "Warning: %s: %s\n", warningName(m.Obj), msg)
		}
		if err != nil && o.dryRun {
			// The server refuses what names objects that must exist
			// (a NIC's network and subnet, where IPAM takes its
			// address); when the files make them, the real apply
			// creates them first.
			if names := refusedForObjectsInFiles(m.Obj, err, ms); names != "" {
				fmt.Fprintf(g.out, "%s created%s; not fully checked by the server, since it needs %s, which the files create\n", displayName(m.Obj), suffix, names)
				continue
			}
		}
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

// applyOne creates the manifest's object, or patches the stored one to
// match it (see merge.go). It returns "created", "configured" or
// "unchanged". c may be a dry-run client: the path is the same, and the
// server checks and answers as it would, writing nothing.
func applyOne(ctx context.Context, c *client.Client, m *manifest) (string, error) {
	cfg, err := appliedConfig(m)
	if err != nil {
		return "", err
	}
	desired, err := withLastApplied(m.Obj, cfg)
	if err != nil {
		return "", err
	}
	kind, md := m.Obj.GetTypeMeta().Kind, m.Obj.GetMetadata()
	// A conflict means someone wrote the object between our read and
	// our write: read it again and retry.
	for attempt := 0; attempt < 5; attempt++ {
		var cur api.Object
		cur, err = c.Get(ctx, kind, md.Tenant, md.Name)
		if api.IsNotFound(err) {
			obj, derr := decodeAs(kind, desired)
			if derr != nil {
				return "", derr
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
		var curMap map[string]any
		if curMap, err = objectMap(cur); err != nil {
			return "", err
		}
		patch := threeWayPatch(lastApplied(cur), curMap, desired)
		// Conditional on the version the patch was computed from.
		pm, _ := patch["metadata"].(map[string]any)
		if pm == nil {
			pm = map[string]any{}
			patch["metadata"] = pm
		}
		pm["resourceVersion"] = cur.GetMetadata().ResourceVersion
		var out api.Object
		out, err = c.Patch(ctx, kind, md.Tenant, md.Name, patch, false)
		if api.IsConflict(err) {
			continue
		}
		if err != nil {
			return "", err
		}
		if changed(cur, out) {
			return "configured", nil
		}
		return "unchanged", nil
	}
	return "", err
}

// decodeAs decodes a configuration as an object of kind.
func decodeAs(kind string, cfg map[string]any) (api.Object, error) {
	obj, err := api.NewObject(kind)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return obj, api.DecodeInto(data, obj)
}

// changed reports whether a write (or a dry run's answer) differs from the
// object it started from in anything apply sets: spec or metadata.
func changed(before, after api.Object) bool {
	b, a := before.GetMetadata(), after.GetMetadata()
	return !api.SpecEqual(before, after) || !maps.Equal(b.Labels, a.Labels) || !maps.Equal(b.Annotations, a.Annotations) ||
		!slices.Equal(b.Finalizers, a.Finalizers) || !slices.Equal(b.OwnerReferences, a.OwnerReferences)
}

// warningName names an object in a warning: `VirtualMachine demo/web-1`.
func warningName(obj api.Object) string {
	m := obj.GetMetadata()
	if m.Tenant == "" {
		return obj.GetTypeMeta().Kind + " " + m.Name
	}
	return obj.GetTypeMeta().Kind + " " + m.Tenant + "/" + m.Name
}

// checkTenantsExist refuses, before anything is written, files whose
// objects go to a tenant that neither exists nor is in the files: the
// usual cause is a --tenant typo, and every object would fail alike.
func checkTenantsExist(ctx context.Context, c *client.Client, ms []*manifest) error {
	defined := map[string]bool{}
	for _, m := range ms {
		if m.Obj.GetTypeMeta().Kind == "Tenant" {
			defined[m.Obj.GetMetadata().Name] = true
		}
	}
	checked := map[string]bool{}
	for _, m := range ms {
		t := m.Obj.GetMetadata().Tenant
		if t == "" || defined[t] || checked[t] {
			continue
		}
		checked[t] = true
		if err := tenantExists(ctx, c, t); err != nil {
			return fmt.Errorf("%s: %w; nothing was changed", m.Source, err)
		}
	}
	return nil
}

// tenantsCreatedBy returns the tenants the files define that do not exist
// yet.
func tenantsCreatedBy(ctx context.Context, c *client.Client, ms []*manifest) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		if m.Obj.GetTypeMeta().Kind != "Tenant" {
			continue
		}
		if _, err := c.Get(ctx, "Tenant", "", m.Obj.GetMetadata().Name); api.IsNotFound(err) {
			out[m.Obj.GetMetadata().Name] = true
		}
	}
	return out
}

// namesObjectInFiles reports whether a warning about obj is about a
// reference to an object the files define: a dry run warns about it
// because it was not created, which the real apply does first.
func namesObjectInFiles(obj api.Object, warning string, ms []*manifest) bool {
	for _, r := range api.ReferencesOf(obj) {
		if !strings.HasPrefix(warning, r.Field+": ") {
			continue
		}
		for _, m := range ms {
			mm := m.Obj.GetMetadata()
			if m.Obj.GetTypeMeta().Kind == r.Kind && mm.Name == r.Name && (mm.Tenant == obj.GetMetadata().Tenant || mm.Tenant == "") {
				return true
			}
		}
	}
	return false
}

// refusedForObjectsInFiles returns the objects an invalid answer was about,
// when every field it refused is a reference to an object the files
// define ("" otherwise).
func refusedForObjectsInFiles(obj api.Object, err error, ms []*manifest) string {
	st, ok := err.(*api.Status)
	if !ok || st.Reason != api.ReasonInvalid || len(st.Fields) == 0 {
		return ""
	}
	var names []string
	for _, f := range st.Fields {
		if sn := subnetInFilesFor(obj, f.Field, ms); sn != "" {
			// A NIC without a subnet takes the network's only one.
			names = append(names, "subnet/"+sn)
			continue
		}
		if !namesObjectInFiles(obj, f.Error(), ms) {
			return ""
		}
		for _, r := range api.ReferencesOf(obj) {
			if r.Field == f.Field {
				names = append(names, strings.ToLower(r.Kind)+"/"+r.Name)
			}
		}
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ", ")
}

// subnetInFilesFor names a subnet the files define on the network of the
// VM NIC whose subnet field is field, if the NIC names no subnet itself.
func subnetInFilesFor(obj api.Object, field string, ms []*manifest) string {
	vm, ok := obj.(*api.VirtualMachine)
	if !ok {
		return ""
	}
	for i, n := range vm.Spec.NICs {
		if field != fmt.Sprintf("spec.nics[%d].subnet", i) || n.Subnet != "" {
			continue
		}
		for _, m := range ms {
			if sn, ok := m.Obj.(*api.Subnet); ok && sn.Spec.Network == n.Network && sn.Metadata.Tenant == vm.Metadata.Tenant {
				return sn.Metadata.Name
			}
		}
	}
	return ""
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
	suffix, deleter := "", c
	if dryRun {
		suffix, deleter = " (dry run)", c.DryRun()
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
				if _, err := deleter.Delete(ctx, kind, md.Tenant, md.Name); err != nil && !api.IsNotFound(err) {
					failed++
					printError(g.errOut, fmt.Errorf("pruning %s: %w", displayName(obj), err))
					continue
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
