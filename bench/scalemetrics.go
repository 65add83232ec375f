package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// placementWaits are the histograms of the server's /metrics that say
// what placing waited on: etcd's disk, and the API's writes.
var placementWaits = []string{
	"etcd_disk_wal_fsync_duration_seconds",
	"etcd_disk_backend_commit_duration_seconds",
	`hearth_api_request_duration_seconds{method="PUT"}`,
	`hearth_api_request_duration_seconds{method="POST"}`,
	// Hosts' writes waiting their turn (the server's fair queue).
	"hearth_api_host_write_wait_seconds",
	// The scheduler's bindings: decided → sent in a batch, and a batch's
	// request (controllers.BindingMetrics).
	"hearth_scheduler_binding_wait_seconds",
	"hearth_scheduler_binding_batch_seconds",
}

// placementSizes are histograms of counts, not times, read the same way.
var placementSizes = []string{"hearth_scheduler_binding_batch_size"}

// sizeDelta says how many were observed between two scrapes and their
// mean: "120 batches, mean 83.3".
func sizeDelta(a, b *histo, what string) string {
	if a == nil || b == nil || b.count <= a.count {
		return "none"
	}
	n := b.count - a.count
	return fmt.Sprintf("%.0f %s, mean %.1f", n, what, (b.sum-a.sum)/n)
}

// histo is one Prometheus histogram as scraped: the cumulative count of
// each bucket by its upper bound, the sum and the count.
type histo struct {
	buckets    map[float64]float64
	sum, count float64
}

// scrapeHistos reads the histograms named (with their label set, as the
// exposition writes it: `name{method="PUT"}`, or just `name`) from a
// server's /metrics.
func scrapeHistos(ctx context.Context, p *serverProc, names ...string) (map[string]*histo, error) {
	c, err := p.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	text, err := c.GetRaw(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseHistos(string(text), names...)
}

// parseHistos reads the named histograms from Prometheus's text format.
func parseHistos(text string, names ...string) (map[string]*histo, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]*histo{}
	get := func(key string) *histo {
		h := out[key]
		if h == nil {
			h = &histo{buckets: map[float64]float64{}}
			out[key] = h
		}
		return h
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := line[:sp]
		name, labels, _ := strings.Cut(series, "{")
		labels = strings.TrimSuffix(labels, "}")
		var le string
		var rest []string
		for _, l := range splitLabels(labels) {
			if strings.HasPrefix(l, "le=") {
				le = strings.Trim(l[3:], `"`)
			} else if l != "" {
				rest = append(rest, l)
			}
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base, ok := strings.CutSuffix(name, suffix)
			if !ok {
				continue
			}
			key := base
			if len(rest) > 0 {
				key += "{" + strings.Join(rest, ",") + "}"
			}
			if !want[key] {
				break
			}
			h := get(key)
			switch suffix {
			case "_bucket":
				bound := math.Inf(1)
				if le != "+Inf" {
					bound, _ = strconv.ParseFloat(le, 64)
				}
				h.buckets[bound] = v
			case "_sum":
				h.sum = v
			case "_count":
				h.count = v
			}
			break
		}
	}
	return out, sc.Err()
}

// splitLabels splits `a="x",b="y"` at the commas between labels.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// histoDelta is what was observed between two scrapes: how many, their
// mean, and the bucket bound under which 99% fell.
type histoDelta struct {
	n         float64
	mean, p99 time.Duration
}

func deltaOf(a, b *histo) histoDelta {
	if a == nil || b == nil || b.count <= a.count {
		return histoDelta{}
	}
	d := histoDelta{n: b.count - a.count}
	d.mean = time.Duration((b.sum - a.sum) / d.n * float64(time.Second))
	d.p99, _ = bucketQuantile(a.buckets, b.buckets, 0.99) // -1: above the largest bound
	return d
}

func (d histoDelta) String() string {
	if d.n == 0 {
		return "none"
	}
	p99 := "≤ " + d.p99.String()
	if d.p99 < 0 {
		p99 = "above the largest bucket"
	}
	return fmt.Sprintf("%.0f, mean %s, p99 %s", d.n, d.mean.Round(10*time.Microsecond), p99)
}
