package bench

import (
	"strconv"
	"strings"
	"testing"
)

func TestCreatePhasesDelta(t *testing.T) {
	exposition := func(readCount, writeCount int) string {
		return strings.NewReplacer("R", itoa(readCount), "W", itoa(writeCount), "S", strconv.FormatFloat(float64(writeCount)*0.003, 'g', -1, 64)).Replace(`# TYPE hearth_api_vm_create_phase_seconds histogram
hearth_api_vm_create_phase_seconds_bucket{phase="read",le="0.001"} R
hearth_api_vm_create_phase_seconds_bucket{phase="read",le="+Inf"} R
hearth_api_vm_create_phase_seconds_sum{phase="read"} 0
hearth_api_vm_create_phase_seconds_count{phase="read"} R
hearth_api_vm_create_phase_seconds_bucket{phase="write",le="0.001"} 0
hearth_api_vm_create_phase_seconds_bucket{phase="write",le="0.004"} W
hearth_api_vm_create_phase_seconds_bucket{phase="write",le="+Inf"} W
hearth_api_vm_create_phase_seconds_sum{phase="write"} S
hearth_api_vm_create_phase_seconds_count{phase="write"} W
`)
	}
	names := []string{createPhaseSeries("read"), createPhaseSeries("write")}
	before, err := parseHistos(exposition(0, 0), names...)
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseHistos(exposition(100, 100), names...)
	if err != nil {
		t.Fatal(err)
	}
	got := createPhasesDelta(before, after)
	want := "read mean 0.00ms, p50 ≤ 1.00ms, p99 ≤ 1.00ms; write mean 3.00ms, p50 ≤ 4.00ms, p99 ≤ 4.00ms"
	if got != want {
		t.Errorf("createPhasesDelta:\n got %s\nwant %s", got, want)
	}
}

func TestParseGauges(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 7332
go_memstats_heap_inuse_bytes 7.66e+08
go_memstats_heap_inuse_bytes_other{x="y"} 1
go_threads 12
`
	got := parseGauges(text, "go_goroutines", "go_memstats_heap_inuse_bytes")
	if len(got) != 2 || got["go_goroutines"] != 7332 || got["go_memstats_heap_inuse_bytes"] != 7.66e8 {
		t.Errorf("parseGauges: got %v", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
