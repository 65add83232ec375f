package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// promQuery asks Prometheus for an instant vector and returns its first
// value (ok false when the vector is empty).
func promQuery(prom, q string) (float64, bool, error) {
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, false, err
	}
	if r.Status != "success" {
		return 0, false, fmt.Errorf("query %s: %s", q, r.Error)
	}
	if len(r.Data.Result) == 0 {
		return 0, false, nil
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil, err
}

// TestPrometheusScrapesEverything runs Debian's Prometheus against a real
// server, agent (with a QEMU guest) and boot service, with the scrape
// configuration and alerts of docs/prometheus: every target is up, the
// example alerts load, and a VM's figures move while its guest runs.
func TestPrometheusScrapesEverything(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
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

	// docs/prometheus's configuration, with this lab's addresses.
	dir := t.TempDir()
	alerts, err := os.ReadFile("../docs/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile("../docs/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus reads the server's metrics as a cluster viewer.
	var tok api.TokenResponse
	l.env.User("prometheus", "", api.RoleViewer)
	if err := l.env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/users/prometheus/tokens", map[string]string{"description": "prometheus"}, &tok); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "hearth-token")
	if err := os.WriteFile(tokenFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverAddr := strings.TrimPrefix(l.env.Server.URL(), "https://")
	conf := strings.NewReplacer(
		"scrape_interval: 15s", "scrape_interval: 1s",
		"evaluation_interval: 15s", "evaluation_interval: 1s",
		"/etc/prometheus/hearth-ca.crt", filepath.Join(l.env.DataDir, "ca.crt"),
		"/etc/prometheus/hearth-token", tokenFile,
		`"server1.lab:8443"`, `"`+serverAddr+`"`,
		`"host1.lab:9464", "host2.lab:9464"`, `"`+agentMetrics+`"`,
		`"boot.lab:9465"`, `"`+bootMetrics+`"`,
	).Replace(string(cfg))
	if strings.Contains(conf, ".lab:") || strings.Contains(conf, "/etc/prometheus") {
		t.Fatalf("docs/prometheus/prometheus.yml changed: the test could not point every target at the lab:\n%s", conf)
	}
	for name, data := range map[string]string{"prometheus.yml": conf, "alerts.yml": string(alerts)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	pctx, pcancel := context.WithCancel(context.Background())
	prom := exec.CommandContext(pctx, promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	var plog strings.Builder
	prom.Stdout, prom.Stderr = &plog, &plog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pcancel()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus said:\n%s", plog.String())
		}
	})
	promURL := "http://" + promAddr

	// Every target is scraped.
	servertest.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get(promURL + "/api/v1/targets")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				ActiveTargets []struct {
					Labels    map[string]string `json:"labels"`
					Health    string            `json:"health"`
					LastError string            `json:"lastError"`
				} `json:"activeTargets"`
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return err
		}
		up := map[string]bool{}
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("target %s is %s: %s", tg.Labels["job"], tg.Health, tg.LastError)
			}
			up[tg.Labels["job"]] = true
		}
		if len(up) != 3 {
			return fmt.Errorf("targets up: %v, want hearth-server, hearth-agent and hearth-boot", up)
		}
		return nil
	})
	// The example alerts load and evaluate.
	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	json.NewDecoder(resp.Body).Decode(&rules)
	resp.Body.Close()
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health == "err" {
				t.Errorf("alert %s does not evaluate: %s", r.Name, r.LastError)
			}
		}
	}
	if n < 5 {
		t.Errorf("%d alerts loaded from docs/prometheus/alerts.yml", n)
	}

	// Each process's own figures are there.
	http.Get("http://" + bootHTTP + "/boot.ipxe")
	for _, q := range []string{
		`hearth_api_requests_total`,
		`etcd_mvcc_db_total_size_in_bytes`,
		`etcd_disk_wal_fsync_duration_seconds_count`,
		`hearth_controller_reconciles_total{job="hearth-server",controller="host-liveness"}`,
		`hearth_host_memory_bytes{host="h1"}`,
		`hearth_boot_http_requests_total{route="GET /boot.ipxe"}`,
	} {
		servertest.Eventually(t, 30*time.Second, func() error {
			v, ok, err := promQuery(promURL, q)
			if err != nil {
				return err
			}
			if !ok || v <= 0 {
				return fmt.Errorf("%s: %v (found %v)", q, v, ok)
			}
			return nil
		})
	}

	// A guest that works: its vCPU time moves, as Prometheus sees it.
	if _, err := l.env.Admin.Create(ctx, l.vm("busy")); err != nil {
		t.Fatal(err)
	}
	l.waitConsole(t, "busy", testguest.Marker+" ready")
	q := `increase(hearth_vm_vcpu_seconds_total{tenant="lab",vm="busy"}[10s])`
	servertest.Eventually(t, 60*time.Second, func() error {
		v, ok, err := promQuery(promURL, q)
		if err != nil {
			return err
		}
		if !ok || v <= 0 {
			return fmt.Errorf("%s: %v (found %v)", q, v, ok)
		}
		return nil
	})
	for _, q := range []string{`hearth_vm_memory_resident_bytes{vm="busy"}`, `hearth_controller_reconciles_total{job="hearth-agent",controller="vms"}`} {
		servertest.Eventually(t, 10*time.Second, func() error {
			if v, ok, err := promQuery(promURL, q); err != nil || !ok || v <= 0 {
				return fmt.Errorf("%s: %v (found %v), %v", q, v, ok, err)
			}
			return nil
		})
	}
}
