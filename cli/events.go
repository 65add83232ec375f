package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

func init() { commands = append(commands, newEventsCmd) }

func newEventsCmd(g *globals) *cobra.Command {
	var forObj string
	var allTenants, watch bool
	cmd := &cobra.Command{
		Use:   "events [--for KIND/NAME]",
		Short: "List what happened to objects, oldest first",
		Long: `List events: what controllers, agents and the boot service saw happen to
objects (a host going NotReady, a VM restarted, a machine's DHCP request),
oldest first. Without --for, the events of the --tenant or context tenant;
with -A, of every tenant and the cluster.`,
		Example: `  hearth events
  hearth events --for host/h1
  hearth events -A -w`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			tenant := c.Tenant
			var o client.ListOptions
			var involvedTenant *string
			if forObj != "" {
				kind, name, ok := strings.Cut(forObj, "/")
				if !ok || name == "" {
					return fmt.Errorf("--for %s: want KIND/NAME, such as vm/web-1", forObj)
				}
				k, err := api.KindByName(kind)
				if err != nil {
					return err
				}
				if !k.HasTenant() {
					tenant = ""
				} else if k.Scope == api.TenantOptional {
					tenant = g.tenant
				}
				t := tenant
				involvedTenant = &t
				o.FieldSelector = "spec.involvedObject.kind=" + k.Kind + ",spec.involvedObject.name=" + name
			}
			o.AllTenants = allTenants
			// Listing the cluster level of events lists every tenant's
			// too (for those who may read them): keep the one asked for.
			keep := func(ev *api.Event) bool {
				if allTenants {
					return true
				}
				if involvedTenant != nil {
					return ev.Metadata.Tenant == *involvedTenant
				}
				return tenant == "" || ev.Metadata.Tenant == tenant
			}
			objs, rv, err := c.List(ctx, "Event", tenant, o)
			if err != nil {
				return err
			}
			var evs []*api.Event
			for _, obj := range objs {
				if ev := obj.(*api.Event); keep(ev) {
					evs = append(evs, ev)
				}
			}
			sortEvents(evs)
			header := []string{"LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"}
			if allTenants {
				header = append([]string{"TENANT"}, header...)
			}
			row := func(ev *api.Event) []string {
				r := []string{api.Age(eventTime(ev), time.Now()), ev.Spec.Type, ev.Spec.Reason,
					strings.ToLower(ev.Spec.InvolvedObject.Kind) + "/" + ev.Spec.InvolvedObject.Name, ev.Spec.Message}
				if allTenants {
					r = append([]string{ev.Metadata.Tenant}, r...)
				}
				return r
			}
			if !watch {
				if len(evs) == 0 {
					noEvents(g, tenant, allTenants)
					return nil
				}
				rows := [][]string{header}
				for _, ev := range evs {
					rows = append(rows, row(ev))
				}
				return writeTable(g.out, rows)
			}
			table := &streamTable{w: g.out}
			rows := [][]string{header}
			seen := map[string]string{}
			for _, ev := range evs {
				rows = append(rows, row(ev))
				seen[client.Key(ev)] = ev.Metadata.ResourceVersion
			}
			table.write(rows...)
			relist := func(ctx context.Context) (string, error) {
				objs, rv, err := c.List(ctx, "Event", tenant, o)
				if err != nil {
					return "", err
				}
				var fresh []*api.Event
				for _, obj := range objs {
					ev := obj.(*api.Event)
					if keep(ev) && seen[client.Key(ev)] != ev.Metadata.ResourceVersion {
						seen[client.Key(ev)] = ev.Metadata.ResourceVersion
						fresh = append(fresh, ev)
					}
				}
				sortEvents(fresh)
				for _, ev := range fresh {
					table.write(row(ev))
				}
				return rv, nil
			}
			return follow(ctx, c, "Event", tenant, o, rv, func(e client.Event) {
				ev := e.Object.(*api.Event)
				if e.Type == "DELETED" || !keep(ev) {
					return
				}
				seen[client.Key(ev)] = ev.Metadata.ResourceVersion
				table.write(row(ev))
			}, relist)
		},
	}
	f := cmd.Flags()
	f.StringVar(&forObj, "for", "", "only events about this object, as KIND/NAME")
	f.BoolVarP(&allTenants, "all-tenants", "A", false, "events of every tenant and of cluster objects")
	f.BoolVarP(&watch, "watch", "w", false, "after listing, print events as they happen")
	_ = cmd.RegisterFlagCompletionFunc("for", completeObjectRef(g))
	return cmd
}

func noEvents(g *globals, tenant string, allTenants bool) {
	if tenant != "" && !allTenants {
		fmt.Fprintf(g.errOut, "No events found in tenant %s.\n", tenant)
		return
	}
	fmt.Fprintln(g.errOut, "No events found.")
}
