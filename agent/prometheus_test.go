package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/testguest"
)

// TestPrometheusScrapesEverything runs Debian's Prometheus against a real
// server, agent (with a QEMU guest) and boot service, with the scrape
// configuration and alerts of docs/prometheus: every target is up, the
// example alerts load, and a VM's figures move while its guest runs.
func TestPrometheusScrapesEverything(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus is not installed (apt-get install prometheus; scripts/deps.sh test does it)")
	}
	agentMetrics := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	l := newLab(t, func(c *agent.Config) {
		c.MetricsListen = agentMetrics
		c.StatsInterval = time.Second
	})
	ctx := servertest.Ctx(t)

	// A boot service on loopback, DHCP off: HTTP and TFTP only.
	bootMetrics := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	bootHTTP := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() {
		bdone <- boot.Run(bctx, boot.Config{Server: l.env.Server.URL(), JoinToken: l.env.JoinToken(api.TokenRequest{TTL: "1h"}).Token,
			CAFile: filepath.Join(l.env.DataDir, "ca.crt"), Name: "boot1", DataDir: t.TempDir(), Address: netip.MustParseAddr("127.0.0.1"),
			DHCPMode: dhcp.ModeOff, HTTPListen: bootHTTP, TFTPListen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)), MetricsListen: bootMetrics})
	}()
	t.Cleanup(func() {
		bcancel()
		<-bdone
	})
	servertest.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + bootHTTP + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})

	// Prometheus reads the server's metrics as a cluster viewer.
	var tok api.TokenResponse
	l.env.User("prometheus", "", api.RoleViewer)
	if err := l.env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/users/prometheus/tokens", map[string]string{"description": "prometheus"}, &tok); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "hearth-token")
	if err := os.WriteFile(tokenFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := servertest.StartPrometheus(t, "../docs", servertest.PrometheusLab{
		Server: strings.TrimPrefix(l.env.Server.URL(), "https://"), CAFile: filepath.Join(l.env.DataDir, "ca.crt"), TokenFile: tokenFile,
		Agents: []string{agentMetrics}, Boot: bootMetrics,
	})
	prom.WaitTargetsUp(t, 60*time.Second, map[string]int{"hearth-server": 1, "hearth-agent": 1, "hearth-boot": 1})
	// The example alerts load and evaluate.
	alerts, err := prom.Alerts()
	if err != nil {
		t.Fatal(err)
	}
	for name, why := range alerts {
		if why != "" {
			t.Errorf("alert %s does not evaluate: %s", name, why)
		}
	}
	if len(alerts) < 5 {
		t.Errorf("%d alerts loaded from docs/prometheus/alerts.yml", len(alerts))
	}

	// Each process's own figures are there.
	http.Get("http://" + bootHTTP + "/boot.ipxe")
	prom.WaitPositive(t, 30*time.Second,
		`hearth_api_requests_total`,
		`etcd_mvcc_db_total_size_in_bytes`,
		`etcd_disk_wal_fsync_duration_seconds_count`,
		`hearth_controller_reconciles_total{job="hearth-server",controller="host-liveness"}`,
		`hearth_host_memory_bytes{host="h1"}`,
		`hearth_boot_http_requests_total{route="GET /boot.ipxe"}`)

	// A guest that works: its vCPU time moves, as Prometheus sees it.
	if _, err := l.env.Admin.Create(ctx, l.vm("busy")); err != nil {
		t.Fatal(err)
	}
	l.waitConsole(t, "busy", testguest.Marker+" ready")
	prom.WaitPositive(t, 60*time.Second, `increase(hearth_vm_vcpu_seconds_total{tenant="lab",vm="busy"}[10s])`)
	prom.WaitPositive(t, 10*time.Second, `hearth_vm_memory_resident_bytes{vm="busy"}`, `hearth_controller_reconciles_total{job="hearth-agent",controller="vms"}`)
}
