package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// target is a kind and the names a command was given for it (none: all).
type target struct {
	kind  *api.KindInfo
	names []string
}

// parseTargets reads the arguments of get, describe and delete:
// "KIND [NAME...]", "KIND,KIND" (no names), or "KIND/NAME [KIND/NAME...]".
func parseTargets(args []string) ([]target, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("name a kind: KIND [NAME...] or KIND/NAME (see `hearth api-resources`)")
	}
	if strings.Contains(args[0], "/") {
		var ts []target
		for _, a := range args {
			kind, name, ok := strings.Cut(a, "/")
			if !ok || kind == "" || name == "" {
				return nil, fmt.Errorf("%q: when the first argument is KIND/NAME, every argument must be", a)
			}
			k, err := api.KindByName(kind)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(ts, func(t target) bool { return t.kind == k })
			if i < 0 {
				ts = append(ts, target{kind: k})
				i = len(ts) - 1
			}
			ts[i].names = append(ts[i].names, name)
		}
		return ts, nil
	}
	kinds := strings.Split(args[0], ",")
	if len(kinds) > 1 && len(args) > 1 {
		return nil, fmt.Errorf("names go with one kind: use KIND/NAME to name objects of several kinds")
	}
	var ts []target
	for _, kn := range kinds {
		k, err := api.KindByName(kn)
		if err != nil {
			return nil, err
		}
		ts = append(ts, target{kind: k, names: args[1:]})
	}
	return ts, nil
}

// readTenant is the tenant a command addresses for kind k when it names
// none itself. Tenant-scoped kinds get "" and the client fills in --tenant
// or the context's tenant. Kinds with an optional tenant (Images, Events)
// use --tenant when given and otherwise the cluster level, which lists
// everything the caller may see.
func (g *globals) readTenant(k *api.KindInfo) string {
	if k.Scope == api.TenantOptional {
		return g.tenant
	}
	return ""
}

// shownTenant is the tenant a read of k really addresses, for messages.
func (g *globals) shownTenant(c *client.Client, k *api.KindInfo) string {
	switch k.Scope {
	case api.TenantScoped:
		return c.Tenant
	case api.TenantOptional:
		return g.tenant
	}
	return ""
}

// kindCompletions are the plurals of every kind, for completing KIND.
func kindCompletions(prefix string) []string {
	var out []string
	for _, k := range api.Kinds() {
		if strings.HasPrefix(k.Plural, strings.ToLower(prefix)) {
			out = append(out, k.Plural)
		}
	}
	slices.Sort(out)
	return out
}

// nameCompletions lists names of kind from the server. Completion must
// never fail loudly, so errors give no suggestions.
func (g *globals) nameCompletions(ctx context.Context, kind, prefix string) []string {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil
	}
	c, err := g.client()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	objs, _, err := c.List(ctx, k.Kind, g.readTenant(k), client.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, o := range objs {
		if n := o.GetMetadata().Name; strings.HasPrefix(n, prefix) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// completeKindAndNames completes "KIND NAME..." and "KIND/NAME" arguments;
// maxNames bounds how many names the command takes (0: any number).
func completeKindAndNames(g *globals, maxNames int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		slashForm := len(args) > 0 && strings.Contains(args[0], "/")
		if slashForm || (len(args) == 0 && strings.Contains(toComplete, "/")) {
			return completeObjectRef(g)(cmd, nil, toComplete)
		}
		if len(args) == 0 {
			return kindCompletions(toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		if maxNames > 0 && len(args)-1 >= maxNames {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range g.nameCompletions(cmd.Context(), args[0], toComplete) {
			if !slices.Contains(args[1:], n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeObjectRef completes KIND/NAME: first the kind and a slash, then
// names from the server.
func completeObjectRef(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if kind, prefix, ok := strings.Cut(toComplete, "/"); ok {
			var out []string
			for _, n := range g.nameCompletions(cmd.Context(), kind, prefix) {
				out = append(out, kind+"/"+n)
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, k := range kindCompletions(toComplete) {
			out = append(out, k+"/")
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// tenantExists returns an error a person can act on when tenant does not
// exist. Any other answer (a tenant user may not read other tenants) is
// left for the command's own request to report.
func tenantExists(ctx context.Context, c *client.Client, tenant string) error {
	if _, err := c.Get(ctx, "Tenant", "", tenant); api.IsNotFound(err) {
		return fmt.Errorf("tenant %q does not exist (see `hearth get tenants`; it comes from --tenant, metadata.tenant or the context)", tenant)
	}
	return nil
}
