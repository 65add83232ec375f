package power

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// redfish drives a BMC through its Redfish (DMTF) HTTP API: one
// ComputerSystem's PowerState, its Reset action and its Boot override.
type redfish struct {
	machine  string
	base     *url.URL // scheme and host; the paths come from the BMC
	system   string   // the ComputerSystem's path; empty: the first one listed
	username string
	password string
	firmware string // bios or uefi, when discovery knows it
	insecure bool
	timeout  time.Duration
	hc       *http.Client
}

const redfishSystems = "/redfish/v1/Systems"

func newRedfish(m *api.Machine, p *api.MachinePower, o Options) (*redfish, error) {
	d := &redfish{
		machine:  m.Metadata.Name,
		username: p.Username,
		password: p.Password,
		firmware: m.Status.Firmware,
		insecure: p.InsecureSkipVerify,
		timeout:  o.HTTPTimeout,
	}
	if err := d.parseAddress(p.Address); err != nil {
		return nil, fmt.Errorf("machine %s: spec.power.address: %w", d.machine, err)
	}
	d.hc = &http.Client{Transport: &http.Transport{
		// A BMC sits on the management network: never reach it through
		// the proxy the environment may name for the internet.
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{
			// Only when the machine says so (spec.power.insecureSkipVerify):
			// most BMCs ship a self-signed certificate.
			InsecureSkipVerify: p.InsecureSkipVerify,
		},
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
	}}
	return d, nil
}

// parseAddress reads spec.power.address: a host (https is assumed), or an
// http(s) URL whose path, if any, is the ComputerSystem to drive
// (https://bmc/redfish/v1/Systems/1) for BMCs that manage several.
func (d *redfish) parseAddress(addr string) error {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("%q is not a host or URL: %w", addr, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%q: want an https URL", addr)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	switch path := strings.TrimRight(u.Path, "/"); {
	case path == "" || path == "/redfish/v1" || path == redfishSystems:
	case strings.HasPrefix(path, redfishSystems+"/"):
		d.system = path
	default:
		return fmt.Errorf("%q: the path should be empty or a system such as %s/1", addr, redfishSystems)
	}
	d.base = &url.URL{Scheme: u.Scheme, Host: u.Host}
	return nil
}

func (d *redfish) String() string {
	if d.system != "" {
		return "redfish " + d.base.String() + d.system
	}
	return "redfish " + d.base.String()
}

// computerSystem is the part of a Redfish ComputerSystem Hearth uses.
type computerSystem struct {
	PowerState string         `json:"PowerState"`
	Boot       map[string]any `json:"Boot"`
	Actions    struct {
		Reset struct {
			Target  string   `json:"target"`
			Allowed []string `json:"ResetType@Redfish.AllowableValues"`
		} `json:"#ComputerSystem.Reset"`
	} `json:"Actions"`

	path string
	etag string
}

func (s *computerSystem) state() State {
	// A transition counts as where it is headed.
	switch s.PowerState {
	case "On", "PoweringOn":
		return On
	case "Off", "PoweringOff":
		return Off
	}
	return Unknown
}

func (d *redfish) On(ctx context.Context) error {
	sys, err := d.getSystem(ctx)
	if err != nil {
		return err
	}
	if sys.state() == On {
		// Many BMCs answer a reset to On with an error when it is on.
		return nil
	}
	return d.reset(ctx, sys, "On")
}

func (d *redfish) Off(ctx context.Context) error {
	sys, err := d.getSystem(ctx)
	if err != nil {
		return err
	}
	if sys.state() == Off {
		return nil
	}
	return d.reset(ctx, sys, "ForceOff")
}

func (d *redfish) Cycle(ctx context.Context) error {
	sys, err := d.getSystem(ctx)
	if err != nil {
		return err
	}
	if sys.state() == Off {
		return d.reset(ctx, sys, "On")
	}
	return d.reset(ctx, sys, "ForceRestart", "PowerCycle")
}

func (d *redfish) Status(ctx context.Context) (State, error) {
	sys, err := d.getSystem(ctx)
	if err != nil {
		return Unknown, err
	}
	if s := sys.state(); s != Unknown {
		return s, nil
	}
	return Unknown, fmt.Errorf("machine %s: redfish %s: unknown PowerState %q", d.machine, sys.path, sys.PowerState)
}

func (d *redfish) BootOnceFromNetwork(ctx context.Context) error {
	sys, err := d.getSystem(ctx)
	if err != nil {
		return err
	}
	if allowed := stringList(sys.Boot["BootSourceOverrideTarget@Redfish.AllowableValues"]); len(allowed) > 0 && !slices.Contains(allowed, "Pxe") {
		return fmt.Errorf("machine %s: redfish %s: the BMC cannot boot from the network once (BootSourceOverrideTarget allows %s): %w",
			d.machine, sys.path, strings.Join(allowed, ", "), ErrUnsupported)
	}
	boot := map[string]string{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}
	// Say which kind of network boot only to a BMC that has the setting
	// (older ones reject properties they do not know), and only when
	// discovery saw which firmware the machine runs.
	if _, ok := sys.Boot["BootSourceOverrideMode"]; ok {
		switch d.firmware {
		case api.FirmwareUEFI:
			boot["BootSourceOverrideMode"] = "UEFI"
		case api.FirmwareBIOS:
			boot["BootSourceOverrideMode"] = "Legacy"
		}
	}
	_, err = d.do(ctx, http.MethodPatch, sys.path, sys.etag, map[string]any{"Boot": boot}, nil)
	return err
}

// reset posts the first of the reset types the BMC allows.
func (d *redfish) reset(ctx context.Context, sys *computerSystem, types ...string) error {
	t := types[0]
	if allowed := sys.Actions.Reset.Allowed; len(allowed) > 0 {
		i := slices.IndexFunc(types, func(t string) bool { return slices.Contains(allowed, t) })
		if i < 0 {
			return fmt.Errorf("machine %s: redfish %s: the BMC allows ResetType %s, none of %s: %w",
				d.machine, sys.path, strings.Join(allowed, ", "), strings.Join(types, ", "), ErrUnsupported)
		}
		t = types[i]
	}
	target := sys.Actions.Reset.Target
	if target == "" {
		target = sys.path + "/Actions/ComputerSystem.Reset"
	}
	_, err := d.do(ctx, http.MethodPost, target, "", map[string]string{"ResetType": t}, nil)
	return err
}

// getSystem reads the ComputerSystem, finding it first unless the address
// named it.
func (d *redfish) getSystem(ctx context.Context) (*computerSystem, error) {
	path := d.system
	if path == "" {
		var coll struct {
			Members []struct {
				ID string `json:"@odata.id"`
			} `json:"Members"`
		}
		if _, err := d.do(ctx, http.MethodGet, redfishSystems, "", nil, &coll); err != nil {
			return nil, err
		}
		if len(coll.Members) == 0 || coll.Members[0].ID == "" {
			return nil, fmt.Errorf("machine %s: redfish %s%s lists no systems", d.machine, d.base, redfishSystems)
		}
		// A BMC of one machine lists one system. One that lists several
		// (a chassis manager) needs its system named in the address.
		path = coll.Members[0].ID
	}
	sys := &computerSystem{path: path}
	h, err := d.do(ctx, http.MethodGet, path, "", nil, sys)
	if err != nil {
		return nil, err
	}
	sys.etag = h.Get("ETag")
	return sys, nil
}

// do sends one request to the BMC and decodes the JSON answer into out
// (unless nil).
func (d *redfish) do(ctx context.Context, method, path, ifMatch string, body, out any) (http.Header, error) {
	ctx, cancel := withTimeout(ctx, d.timeout)
	defer cancel()
	what := fmt.Sprintf("machine %s: redfish %s %s", d.machine, method, d.base.String()+path)
	ref, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base.ResolveReference(ref).String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	if d.username != "" || d.password != "" {
		req.SetBasicAuth(d.username, d.password)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		var cerr *tls.CertificateVerificationError
		if errors.As(err, &cerr) && !d.insecure {
			return nil, fmt.Errorf("%s: %w (if the BMC has a self-signed certificate, set spec.power.insecureSkipVerify: true)", what, err)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode >= 300 {
		msg := redfishError(data)
		if msg == "" {
			msg = bodySnippet(data)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += " (check spec.power.username and spec.power.password)"
		}
		return nil, fmt.Errorf("%s: %s: %s", what, resp.Status, strings.TrimSpace(msg))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s: the answer is not Redfish JSON: %w", what, err)
		}
	}
	return resp.Header, nil
}

// redfishError extracts the messages of a Redfish error answer.
func redfishError(data []byte) string {
	var e struct {
		Error struct {
			Message  string `json:"message"`
			Extended []struct {
				Message string `json:"Message"`
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil {
		return ""
	}
	var msgs []string
	for _, x := range e.Error.Extended {
		if x.Message != "" {
			msgs = append(msgs, x.Message)
		}
	}
	if len(msgs) == 0 && e.Error.Message != "" {
		msgs = append(msgs, e.Error.Message)
	}
	return strings.Join(msgs, "; ")
}

// stringList reads a JSON array of strings decoded into any.
func stringList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
