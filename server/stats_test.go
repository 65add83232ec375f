package server_test

import (
	"net/http"
	"strings"
	"testing"

	"hearth.dev/hearth/agent/console/consoletest"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestStatsAuthorized: a VM's stats are authorized like the VM and a
// host's like the Host, before the server asks any agent: another tenant
// gets 403 whether the VM exists or not, a tenant user gets no host's
// figures, and host and boot service credentials get none at all. (The figures themselves are tested with a real agent
// in package agent.)
func TestStatsAuthorized(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	env.Tenant("b")
	viewer := env.User("a-viewer", "a", api.RoleViewer)
	intruder := env.User("b-admin", "b", api.RoleTenantAdmin)
	agent := consoletest.StartAgent(t, env.Server.CAPEM())
	hostWithAgent(t, env, "h1", agent, agent.Fingerprint)
	vmOn(t, env, "a", "web-1", "h1")
	hostWithAgent(t, env, "h2", nil, "")

	var out map[string]any
	vmStats := api.PathPrefix + "/tenants/a/virtualmachines/%s/stats"
	for _, name := range []string{"web-1", "nope"} {
		err := intruder.Do(ctx, http.MethodGet, strings.Replace(vmStats, "%s", name, 1), nil, &out)
		wantCode(t, "tenant b reads the stats of tenant a's "+name, err, http.StatusForbidden, "another tenant")
	}
	err := intruder.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/h1/stats", nil, &out)
	wantCode(t, "a tenant user reads a host's stats", err, http.StatusForbidden, "cluster infrastructure")
	// Hosts and boot services read every Host and VM for their work, but
	// no figures: not another host's, nor the VMs on it.
	for who, c := range map[string]*client.Client{"another host": env.Host("h3"), "a boot service": env.BootService("boot1")} {
		err = c.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/h1/stats", nil, &out)
		wantCode(t, who+" reads host h1's stats", err, http.StatusForbidden, "not hosts or boot services")
		err = c.Do(ctx, http.MethodGet, strings.Replace(vmStats, "%s", "web-1", 1), nil, &out)
		wantCode(t, who+" reads the stats of a VM on h1", err, http.StatusForbidden, "not hosts or boot services")
	}
	// The VM's own tenant may read them: this agent is a stand-in without
	// stats, which the server reports as the agent's answer.
	err = viewer.Do(ctx, http.MethodGet, strings.Replace(vmStats, "%s", "web-1", 1), nil, &out)
	wantCode(t, "a viewer of tenant a reads web-1's stats from an agent without them", err, http.StatusServiceUnavailable, "host h1")
	err = env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/h2/stats", nil, &out)
	wantCode(t, "stats of a host without agent", err, http.StatusServiceUnavailable, "host h2 has no agent endpoint yet")
	err = env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/nope/stats", nil, &out)
	wantCode(t, "stats of a host that does not exist", err, http.StatusNotFound, "not found")
	err = env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/hosts/h1/stats", nil, &out)
	wantCode(t, "POST on stats", err, http.StatusMethodNotAllowed, "not allowed")
}
