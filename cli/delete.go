package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newDeleteCmd) }

type deleteOptions struct {
	files          []string
	selector       string
	wait           bool
	timeout        time.Duration
	ignoreNotFound bool
}

// deletion is one object to delete.
type deletion struct {
	kind, tenant, name string
}

func newDeleteCmd(g *globals) *cobra.Command {
	var o deleteOptions
	cmd := &cobra.Command{
		Use:   "delete KIND NAME... | KIND/NAME... | -f PATH",
		Short: "Delete objects by name, by label or as listed in files",
		Long: `Delete objects. An object with finalizers is marked for deletion and goes
once its controllers have cleaned up (a VM's disks, a network's devices);
--wait waits for that.`,
		Example: `  hearth delete network net1
  hearth delete vm/web-1 vm/web-2 --wait
  hearth delete vms -l app=web
  hearth delete -f lab.yaml`,
		ValidArgsFunction: completeKindAndNames(g, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDelete(cmd.Context(), g, o, args)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "delete the objects in this file, directory or - (stdin); repeatable")
	f.StringVarP(&o.selector, "selector", "l", "", "delete every object of KIND matching this label selector")
	f.BoolVar(&o.wait, "wait", false, "wait until the objects are really gone")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long --wait waits")
	f.BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	return cmd
}

func runDelete(ctx context.Context, g *globals, o deleteOptions, args []string) error {
	if len(o.files) > 0 && len(args) > 0 {
		return errors.New("give either -f or KIND NAME..., not both")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	var todo []deletion
	if len(o.files) > 0 {
		if todo, err = deletionsFromFiles(g, c, o.files); err != nil {
			return err
		}
	} else {
		targets, err := parseTargets(args)
		if err != nil {
			return err
		}
		for _, t := range targets {
			switch {
			case len(t.names) > 0 && o.selector != "":
				return errors.New("give either names or -l, not both")
			case len(t.names) == 0 && o.selector == "":
				return fmt.Errorf("name the %s to delete, or select them with -l", t.kind.Plural)
			case len(t.names) == 0:
				objs, _, err := c.List(ctx, t.kind.Kind, g.readTenant(t.kind), client.ListOptions{LabelSelector: o.selector})
				if err != nil {
					return err
				}
				if len(objs) == 0 {
					g.noResources(c, t.kind, false)
				}
				for _, obj := range objs {
					todo = append(todo, deletion{t.kind.Kind, obj.GetMetadata().Tenant, obj.GetMetadata().Name})
				}
			default:
				for _, n := range t.names {
					todo = append(todo, deletion{t.kind.Kind, g.readTenant(t.kind), n})
				}
			}
		}
	}

	var failed int
	var pending []deletion
	for _, d := range todo {
		label := strings.ToLower(d.kind) + "/" + d.name
		obj, err := c.Delete(ctx, d.kind, d.tenant, d.name)
		if err != nil {
			if api.IsNotFound(err) && o.ignoreNotFound {
				continue
			}
			if len(todo) == 1 {
				return err
			}
			failed++
			printError(g.errOut, err)
			continue
		}
		if fs := obj.GetMetadata().Finalizers; len(fs) > 0 {
			fmt.Fprintf(g.out, "%s marked for deletion (waiting on finalizers: %s)\n", label, strings.Join(fs, ", "))
			if o.wait {
				d.tenant = obj.GetMetadata().Tenant
				pending = append(pending, d)
			}
			continue
		}
		fmt.Fprintf(g.out, "%s deleted\n", label)
	}
	if len(pending) > 0 {
		wctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		for _, d := range pending {
			if err := waitGone(wctx, c, d); err != nil {
				return fmt.Errorf("waiting for %s/%s to go: %w", strings.ToLower(d.kind), d.name, err)
			}
			fmt.Fprintf(g.out, "%s/%s deleted\n", strings.ToLower(d.kind), d.name)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects could not be deleted", failed, len(todo))
	}
	return nil
}

// deletionsFromFiles reads the objects in files and lists them
// dependents first, the reverse of the order apply creates them in.
func deletionsFromFiles(g *globals, c *client.Client, files []string) ([]deletion, error) {
	ms, err := readManifests(files, g.in)
	if err != nil {
		return nil, err
	}
	var bad []*manifest
	for _, m := range ms {
		if m.Obj == nil {
			bad = append(bad, m)
			continue
		}
		k, err := api.KindByName(m.Obj.GetTypeMeta().Kind)
		if err != nil {
			bad = append(bad, m)
			continue
		}
		if md := m.Obj.GetMetadata(); k.Scope == api.TenantScoped && md.Tenant == "" {
			md.Tenant = c.Tenant
		}
	}
	if len(bad) > 0 {
		return nil, &manifestErrors{bad: bad, total: len(ms)}
	}
	sortManifests(ms)
	out := make([]deletion, 0, len(ms))
	for i := len(ms) - 1; i >= 0; i-- {
		md := ms[i].Obj.GetMetadata()
		out = append(out, deletion{ms[i].Obj.GetTypeMeta().Kind, md.Tenant, md.Name})
	}
	return out, nil
}

// waitGone polls until the object no longer exists.
func waitGone(ctx context.Context, c *client.Client, d deletion) error {
	for {
		_, err := c.Get(ctx, d.kind, d.tenant, d.name)
		if api.IsNotFound(err) {
			return nil
		}
		if err != nil && ctx.Err() == nil && permanent(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
