package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/testguest"
)

// scrape reads one series' value from the agent's /metrics.
func scrape(t *testing.T, url, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// TestMetricsAndStats: a running guest's vCPU time, memory and disk
// figures are in the agent's Prometheus metrics and move while it works;
// the API serves the last samples of the VM and of its host, to those
// who may read them.
func TestMetricsAndStats(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	l := newLab(t, func(c *agent.Config) {
		c.MetricsListen = metricsAddr
		c.StatsInterval = 500 * time.Millisecond
	})
	ctx := servertest.Ctx(t)
	if _, err := l.env.Admin.Create(ctx, l.vm("m1")); err != nil {
		t.Fatal(err)
	}
	l.waitConsole(t, "m1", testguest.Marker+" ready")
	url := "http://" + metricsAddr + "/metrics"
	vcpu := `hearth_vm_vcpu_seconds_total{host="h1",tenant="lab",vm="m1"}`
	var first float64
	servertest.Eventually(t, 30*time.Second, func() error {
		v, ok := scrape(t, url, vcpu)
		if !ok || v <= 0 {
			return fmt.Errorf("%s is %v (found %v)", vcpu, v, ok)
		}
		first = v
		return nil
	})
	// The guest keeps a timer going even when idle (and TCG spends CPU on
	// it): its vCPU time moves.
	servertest.Eventually(t, 30*time.Second, func() error {
		if v, _ := scrape(t, url, vcpu); v <= first {
			return fmt.Errorf("%s stayed at %v", vcpu, v)
		}
		return nil
	})
	for _, series := range []string{
		`hearth_vm_memory_resident_bytes{host="h1",tenant="lab",vm="m1"}`,
		`hearth_vm_vcpus{host="h1",tenant="lab",vm="m1"}`,
		`hearth_host_memory_bytes{host="h1"}`,
		`hearth_host_cpu_seconds_total{host="h1",mode="user"}`,
		`hearth_controller_reconciles_total{controller="vms"}`,
	} {
		if v, ok := scrape(t, url, series); !ok || v <= 0 {
			t.Errorf("%s = %v (found %v), want > 0", series, v, ok)
		}
	}

	// The history through the API.
	var vmStats, hostStats api.Stats
	servertest.Eventually(t, 30*time.Second, func() error {
		if err := l.env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/tenants/lab/virtualmachines/m1/stats", nil, &vmStats); err != nil {
			return err
		}
		if len(vmStats.Samples) < 2 {
			return fmt.Errorf("%d VM samples so far", len(vmStats.Samples))
		}
		return nil
	})
	last := vmStats.Samples[len(vmStats.Samples)-1]
	if last.Memory <= 0 || last.CPU < 0 || last.CPU > 100.5 || vmStats.Interval != "500ms" {
		t.Errorf("the VM's last sample %+v (interval %s): want memory > 0 and CPU within 0-100%%", last, vmStats.Interval)
	}
	if err := l.env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/h1/stats", nil, &hostStats); err != nil || len(hostStats.Samples) < 2 {
		t.Fatalf("host stats: %d samples, %v", len(hostStats.Samples), err)
	}
	if h := hostStats.Samples[len(hostStats.Samples)-1]; h.Memory <= 0 || h.CPU < 0 || h.CPU > 100.5 {
		t.Errorf("the host's last sample %+v: want memory > 0 and CPU within 0-100%%", h)
	}
	l.env.Tenant("other")
	other := l.env.User("o-admin", "other", api.RoleTenantAdmin)
	var out api.Stats
	if err := other.Do(ctx, http.MethodGet, api.PathPrefix+"/tenants/lab/virtualmachines/m1/stats", nil, &out); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("another tenant reads m1's stats: %v, want Forbidden", err)
	}
	labViewer := l.env.User("l-viewer", "lab", api.RoleViewer)
	if err := labViewer.Do(ctx, http.MethodGet, api.PathPrefix+"/tenants/lab/virtualmachines/m1/stats", nil, &out); err != nil || len(out.Samples) == 0 {
		t.Errorf("a viewer of the VM's tenant reads its stats: %d samples, %v", len(out.Samples), err)
	}
	if err := labViewer.Do(ctx, http.MethodGet, api.PathPrefix+"/hosts/h1/stats", nil, &out); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("a tenant's viewer reads the host's stats: %v, want Forbidden", err)
	}

	// Stopped, the VM leaves the metrics.
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "m1", map[string]any{"spec": map[string]any{"powerState": api.PowerStopped}}, false); err != nil {
		t.Fatal(err)
	}
	l.waitPhase(t, "m1", api.VMStopped)
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, ok := scrape(t, url, vcpu); ok {
			return fmt.Errorf("%s is still exported", vcpu)
		}
		return nil
	})
}
