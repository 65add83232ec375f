package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"text/template"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// webhook switches power by calling URLs: a smart plug (Shelly, Tasmota)
// or a home-automation hub that switches one. It turns the whole machine's
// power off, so it knows nothing of boot devices; it reads the state only
// when a statusURL is configured.
type webhook struct {
	m          *api.Machine
	cfg        *api.PowerWebhook // defaulted
	body       *template.Template
	statusOn   *regexp.Regexp
	timeout    time.Duration
	cycleDelay time.Duration
	hc         *http.Client
}

// WebhookData is what spec.power.webhook.bodyTemplate is executed with.
type WebhookData struct {
	Machine *api.Machine
	// Action is the wanted state: "on" or "off".
	Action string
}

// webhookFuncs are the functions a body template may call: json quotes a
// value for a JSON body ({"name": {{json .Machine.Metadata.Name}}}).
var webhookFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

func newWebhook(m *api.Machine, w *api.PowerWebhook, o Options) (*webhook, error) {
	d := &webhook{m: m, cfg: w, timeout: o.HTTPTimeout, cycleDelay: o.CycleDelay,
		hc: &http.Client{Transport: &http.Transport{
			// A plug may be a cloud service reached through the proxy.
			Proxy:               http.ProxyFromEnvironment,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     30 * time.Second,
		}}}
	if w.BodyTemplate != "" {
		t, err := template.New("bodyTemplate").Funcs(webhookFuncs).Option("missingkey=error").Parse(w.BodyTemplate)
		if err != nil {
			return nil, fmt.Errorf("machine %s: spec.power.webhook.bodyTemplate: %w", m.Metadata.Name, err)
		}
		d.body = t
	}
	if w.StatusURL != "" {
		re, err := regexp.Compile(w.StatusOnMatch)
		if err != nil {
			return nil, fmt.Errorf("machine %s: spec.power.webhook.statusOnMatch: %w", m.Metadata.Name, err)
		}
		d.statusOn = re
	}
	return d, nil
}

func (d *webhook) String() string { return "webhook " + redactURL(d.cfg.OnURL) }

func (d *webhook) On(ctx context.Context) error  { return d.switchTo(ctx, "on", d.cfg.OnURL) }
func (d *webhook) Off(ctx context.Context) error { return d.switchTo(ctx, "off", d.cfg.OffURL) }

// Cycle switches off, waits for the power supply to drain, and switches
// on. A machine that is off (when the plug can tell) is just switched on.
func (d *webhook) Cycle(ctx context.Context) error {
	if d.statusOn != nil {
		if s, err := d.Status(ctx); err == nil && s == Off {
			return d.On(ctx)
		}
	}
	if err := d.Off(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, d.cycleDelay); err != nil {
		return fmt.Errorf("machine %s: power cycle: switched off, then %w before switching on again", d.m.Metadata.Name, err)
	}
	return d.On(ctx)
}

func (d *webhook) Status(ctx context.Context) (State, error) {
	if d.statusOn == nil {
		return Unknown, fmt.Errorf("machine %s: reading the power state needs spec.power.webhook.statusURL: %w", d.m.Metadata.Name, ErrUnsupported)
	}
	body, err := d.call(ctx, http.MethodGet, d.cfg.StatusURL, nil)
	if err != nil {
		return Unknown, err
	}
	if d.statusOn.Match(body) {
		return On, nil
	}
	return Off, nil
}

func (d *webhook) BootOnceFromNetwork(context.Context) error {
	return fmt.Errorf("machine %s: choosing the boot device with a power webhook (put network boot first in its firmware's boot order): %w", d.m.Metadata.Name, ErrUnsupported)
}

func (d *webhook) switchTo(ctx context.Context, action, target string) error {
	var body []byte
	if d.body != nil {
		var b bytes.Buffer
		if err := d.body.Execute(&b, WebhookData{Machine: d.m, Action: action}); err != nil {
			return fmt.Errorf("machine %s: spec.power.webhook.bodyTemplate: %w", d.m.Metadata.Name, err)
		}
		body = b.Bytes()
	}
	_, err := d.call(ctx, d.cfg.Method, target, body)
	return err
}

// call sends one request with the configured headers and returns the
// answer's body. Errors show the URL without its query, where plugs'
// APIs often carry a token.
func (d *webhook) call(ctx context.Context, method, target string, body []byte) ([]byte, error) {
	ctx, cancel := withTimeout(ctx, d.timeout)
	defer cancel()
	what := fmt.Sprintf("machine %s: power webhook %s %s", d.m.Metadata.Name, method, redactURL(target))
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if body != nil {
		if json.Valid(body) {
			req.Header.Set("Content-Type", "application/json")
		} else {
			req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		}
	}
	for k, v := range d.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		// url.Error repeats the whole URL; say what failed without it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %s", what, statusError(resp, data))
	}
	return data, nil
}

// redactURL drops a URL's query and user info, which may hold secrets.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid URL>"
	}
	query := u.RawQuery != ""
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	if query {
		return u.String() + "?…"
	}
	return u.String()
}
