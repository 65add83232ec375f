package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PrometheusLab is where a lab's processes serve their metrics: what
// docs/prometheus/prometheus.yml's example targets become.
type PrometheusLab struct {
	// Server is the API's HOST:PORT; CAFile the cluster CA; TokenFile a
	// cluster-wide user's token (the server's /metrics wants one).
	Server, CAFile, TokenFile string
	// Agents and Boot are the agents' and the boot service's
	// --metrics-listen addresses.
	Agents []string
	Boot   string
}

// Prometheus is Debian's Prometheus, run by a test with the project's
// documented configuration (docs/prometheus) pointed at a lab.
type Prometheus struct {
	URL string
}

// StartPrometheus runs Prometheus against lab with docs/prometheus's
// scrape configuration and alerts (docs is the path of the repository's
// docs directory), scraping every second, until the test ends. It skips
// the test when Prometheus is not installed, and fails it when the
// documented configuration no longer has the example targets it
// replaces (so the docs and the test cannot drift apart).
func StartPrometheus(t testing.TB, docs string, lab PrometheusLab) *Prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (apt-get install prometheus; scripts/deps.sh test does it)")
	}
	dir := t.TempDir()
	alerts, err := os.ReadFile(filepath.Join(docs, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(docs, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	quoted := func(addrs ...string) string { return `"` + strings.Join(addrs, `", "`) + `"` }
	conf := strings.NewReplacer(
		"scrape_interval: 15s", "scrape_interval: 1s",
		"evaluation_interval: 15s", "evaluation_interval: 1s",
		"/etc/prometheus/hearth-ca.crt", lab.CAFile,
		"/etc/prometheus/hearth-token", lab.TokenFile,
		`"server1.lab:8443"`, quoted(lab.Server),
		`"host1.lab:9464", "host2.lab:9464"`, quoted(lab.Agents...),
		`"boot.lab:9465"`, quoted(lab.Boot),
	).Replace(string(cfg))
	if strings.Contains(conf, ".lab:") || strings.Contains(conf, "/etc/prometheus") {
		t.Fatalf("docs/prometheus/prometheus.yml changed: the test could not point every target at the lab:\n%s", conf)
	}
	for name, data := range map[string]string{"prometheus.yml": conf, "alerts.yml": string(alerts)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus said:\n%s", log.String())
		}
	})
	return &Prometheus{URL: "http://" + addr}
}

// Query asks for an instant vector and returns its first value (ok
// false when the vector is empty).
func (p *Prometheus) Query(q string) (v float64, ok bool, err error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(q))
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
	v, err = strconv.ParseFloat(s, 64)
	return v, err == nil, err
}

// WaitPositive waits until every query has a value above zero.
func (p *Prometheus) WaitPositive(t testing.TB, timeout time.Duration, queries ...string) {
	t.Helper()
	for _, q := range queries {
		Eventually(t, timeout, func() error {
			v, ok, err := p.Query(q)
			if err != nil {
				return err
			}
			if !ok || v <= 0 {
				return fmt.Errorf("%s: %v (found %v)", q, v, ok)
			}
			return nil
		})
	}
}

// WaitTargetsUp waits until Prometheus scrapes every target it has, and
// has exactly want of them, all healthy: each job's instances counted.
func (p *Prometheus) WaitTargetsUp(t testing.TB, timeout time.Duration, want map[string]int) {
	t.Helper()
	Eventually(t, timeout, func() error {
		resp, err := http.Get(p.URL + "/api/v1/targets")
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
		up := map[string]int{}
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("target %s at %s is %s: %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError)
			}
			up[tg.Labels["job"]]++
		}
		if fmt.Sprint(up) != fmt.Sprint(want) {
			return fmt.Errorf("targets up per job: %v, want %v", up, want)
		}
		return nil
	})
}

// Alerts returns the loaded alerting rules' names and the error of each
// that does not evaluate ("" when it does).
func (p *Prometheus) Alerts() (map[string]string, error) {
	resp, err := http.Get(p.URL + "/api/v1/rules")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&rules); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			out[r.Name] = ""
			if r.Health == "err" {
				out[r.Name] = r.LastError
			}
		}
	}
	return out, nil
}
