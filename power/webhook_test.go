package power

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// fakePlug is a smart plug's HTTP API: it records the calls and answers
// the status URL with a body the test chooses.
type fakePlug struct {
	mu     sync.Mutex
	calls  []string // "METHOD /path?query Content-Type body"
	auth   []string // Authorization headers
	status string
	fail   bool
}

func (p *fakePlug) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	p.calls = append(p.calls, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Content-Type")+" "+string(body)))
	p.auth = append(p.auth, r.Header.Get("Authorization"))
	if p.fail {
		http.Error(w, "relay stuck", http.StatusInternalServerError)
		return
	}
	if r.URL.Path == "/status" {
		io.WriteString(w, p.status)
		return
	}
	io.WriteString(w, `{"ok":true}`)
}

func (p *fakePlug) take() (calls, auth []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	calls, auth = p.calls, p.auth
	p.calls, p.auth = nil, nil
	return calls, auth
}

func (p *fakePlug) set(status string, fail bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.fail = status, fail
}

func newPlug(t *testing.T) (*fakePlug, string) {
	p := &fakePlug{}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func plugMachine(base string) *api.Machine {
	return machine("node3", api.MachinePower{Driver: "webhook", Webhook: &api.PowerWebhook{
		OnURL:        base + "/relay/0?turn=on&token=t0ps3cret",
		OffURL:       base + "/relay/0?turn=off&token=t0ps3cret",
		BodyTemplate: `{"machine":{{json .Machine.Metadata.Name}},"mac":"{{.Machine.Spec.MAC}}","state":"{{.Action}}"}`,
		Headers:      map[string]string{"Authorization": "Bearer abc"},
		StatusURL:    base + "/status",
	}})
}

func TestWebhookSwitches(t *testing.T) {
	p, base := newPlug(t)
	d, err := For(plugMachine(base), Options{CycleDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const body = `application/json {"machine":"node3","mac":"52:54:00:12:34:56","state":"%s"}`
	on := "POST /relay/0?turn=on&token=t0ps3cret " + strings.Replace(body, "%s", "on", 1)
	off := "POST /relay/0?turn=off&token=t0ps3cret " + strings.Replace(body, "%s", "off", 1)
	steps := []struct {
		name   string
		status string // what the plug reports
		do     func(context.Context) error
		want   []string
	}{
		{"on", "", d.On, []string{on}},
		{"off", "", d.Off, []string{off}},
		{"cycle while on", `{"ison": true}`, d.Cycle, []string{"GET /status", off, on}},
		{"cycle while off only switches on", `{"ison": false}`, d.Cycle, []string{"GET /status", on}},
	}
	for _, s := range steps {
		p.set(s.status, false)
		if err := s.do(ctx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		calls, auth := p.take()
		if !reflect.DeepEqual(calls, s.want) {
			t.Errorf("%s: calls\n%q\nwant\n%q", s.name, calls, s.want)
		}
		for _, a := range auth {
			if a != "Bearer abc" {
				t.Errorf("%s: Authorization = %q, want the configured header", s.name, a)
			}
		}
	}
}

func TestWebhookMethodAndPlainBody(t *testing.T) {
	p, base := newPlug(t)
	m := machine("node3", api.MachinePower{Driver: "webhook", Webhook: &api.PowerWebhook{
		OnURL: base + "/cm?cmnd=Power%20On", OffURL: base + "/cm?cmnd=Power%20Off", Method: "PUT", BodyTemplate: "{{.Action}}",
	}})
	d, err := For(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Off(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls, _ := p.take()
	if want := []string{"PUT /cm?cmnd=Power%20Off text/plain; charset=utf-8 off"}; !reflect.DeepEqual(calls, want) {
		t.Errorf("calls = %q, want %q", calls, want)
	}
}

func TestWebhookStatus(t *testing.T) {
	p, base := newPlug(t)
	d, err := For(plugMachine(base), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The default statusOnMatch knows the common plugs' answers.
	tests := []struct {
		body string
		want State
	}{
		{`{"id":0,"ison":true,"source":"http"}`, On},      // Shelly gen 1
		{`{"id":0,"ison":false,"source":"http"}`, Off},    // Shelly gen 1
		{`{"id":0,"output":true,"apower":42.1}`, On},      // Shelly gen 2
		{`{"POWER":"ON"}`, On},                            // Tasmota
		{`{"POWER":"OFF"}`, Off},                          // Tasmota
		{`{"entity_id":"switch.node3","state":"on"}`, On}, // Home Assistant
		{`{"entity_id":"switch.node3","state":"off"}`, Off},
		{"on\n", On},
		{"off", Off},
	}
	for _, tt := range tests {
		p.set(tt.body, false)
		if got, err := d.Status(context.Background()); err != nil || got != tt.want {
			t.Errorf("status answer %s: got %q, %v; want %q", tt.body, got, err, tt.want)
		}
	}

	t.Run("custom match", func(t *testing.T) {
		m := plugMachine(base)
		m.Spec.Power.Webhook.StatusOnMatch = `"relay":\s*1`
		d, err := For(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		p.set(`{"relay": 1}`, false)
		if got, err := d.Status(context.Background()); err != nil || got != On {
			t.Errorf("Status = %q, %v; want on", got, err)
		}
	})
	t.Run("no status URL", func(t *testing.T) {
		m := plugMachine(base)
		m.Spec.Power.Webhook.StatusURL = ""
		d, err := For(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := d.Status(context.Background()); got != Unknown || !errors.Is(err, ErrUnsupported) {
			t.Errorf("Status = %q, %v; want unknown, ErrUnsupported", got, err)
		}
	})
}

func TestWebhookErrors(t *testing.T) {
	p, base := newPlug(t)
	d, err := For(plugMachine(base), Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.set("", true)
	err = d.On(context.Background())
	if err == nil || !strings.Contains(err.Error(), "500 Internal Server Error: relay stuck") || !strings.Contains(err.Error(), "node3") {
		t.Errorf("On = %v, want an error with the plug's answer", err)
	}
	if err != nil && strings.Contains(err.Error(), "t0ps3cret") {
		t.Errorf("error %q shows the URL's token", err)
	}
	if err := d.BootOnceFromNetwork(context.Background()); !errors.Is(err, ErrUnsupported) {
		t.Errorf("BootOnceFromNetwork = %v, want ErrUnsupported", err)
	}
}
