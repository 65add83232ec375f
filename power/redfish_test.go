package power

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// fakeBMC is a Redfish service with one ComputerSystem, enough for the
// power driver: the Systems collection, the system with its PowerState,
// Boot and Reset action, the action itself and PATCH of Boot.
type fakeBMC struct {
	t            *testing.T
	mu           sync.Mutex
	powerState   string
	allowedReset []string
	resets       []string         // ResetTypes posted, in order
	patches      []map[string]any // PATCH bodies
	ifMatch      []string
	requests     []string // "METHOD path"
}

const (
	bmcUser     = "root"
	bmcPassword = "calvin"
	bmcETag     = `W/"1234"`
)

func (b *fakeBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, r.Method+" "+r.URL.Path)
	if u, p, ok := r.BasicAuth(); !ok || u != bmcUser || p != bmcPassword {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"Base.1.8.GeneralError","message":"A general error has occurred.","@Message.ExtendedInfo":[{"Message":"The authentication credentials included with this request are missing or invalid."}]}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	const sys = "/redfish/v1/Systems/System.Embedded.1"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems":
		fmt.Fprintf(w, `{"Members":[{"@odata.id":%q}],"Members@odata.count":1}`, sys)
	case r.Method == http.MethodGet && r.URL.Path == sys:
		w.Header().Set("ETag", bmcETag)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"@odata.id":  sys,
			"PowerState": b.powerState,
			"Boot": map[string]any{
				"BootSourceOverrideEnabled":                        "Disabled",
				"BootSourceOverrideTarget":                         "None",
				"BootSourceOverrideMode":                           "Legacy",
				"BootSourceOverrideTarget@Redfish.AllowableValues": []string{"None", "Pxe", "Hdd", "Cd"},
			},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            sys + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": b.allowedReset,
			}},
		})
	case r.Method == http.MethodPost && r.URL.Path == sys+"/Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Content-Type") != "application/json" {
			b.t.Errorf("reset: bad request (%v, Content-Type %q)", err, r.Header.Get("Content-Type"))
		}
		b.resets = append(b.resets, body.ResetType)
		switch body.ResetType {
		case "On":
			b.powerState = "On"
		case "ForceOff":
			b.powerState = "Off"
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch && r.URL.Path == sys:
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			b.t.Errorf("patch: %v", err)
		}
		b.patches = append(b.patches, body)
		b.ifMatch = append(b.ifMatch, r.Header.Get("If-Match"))
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":"Base.1.8.ResourceMissingAtURI","message":"The resource at the URI %s was not found."}}`, r.URL.Path)
	}
}

func (b *fakeBMC) allow(resets ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowedReset = resets
}

func (b *fakeBMC) patched() (bodies []map[string]any, ifMatch []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.patches, b.ifMatch
}

func (b *fakeBMC) take() (resets []string, requests []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	resets, requests = b.resets, b.requests
	b.resets, b.requests = nil, nil
	return resets, requests
}

func newFakeBMC(t *testing.T) (*fakeBMC, *httptest.Server) {
	b := &fakeBMC{t: t, powerState: "Off", allowedReset: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"}}
	srv := httptest.NewUnstartedServer(b)
	// The certificate test's refused handshake is expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return b, srv
}

func redfishMachine(address, password string) *api.Machine {
	return machine("node2", api.MachinePower{Driver: "redfish", Address: address, Username: bmcUser, Password: password, InsecureSkipVerify: true})
}

func TestRedfishPower(t *testing.T) {
	b, srv := newFakeBMC(t)
	d, err := For(redfishMachine(srv.URL, bmcPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name       string
		do         func(context.Context) error
		wantResets []string
		wantState  State
	}{
		{"on", d.On, []string{"On"}, On},
		{"on again does nothing", d.On, nil, On},
		{"cycle", d.Cycle, []string{"ForceRestart"}, On},
		{"off", d.Off, []string{"ForceOff"}, Off},
		{"off again does nothing", d.Off, nil, Off},
		{"cycle while off turns on", d.Cycle, []string{"On"}, On},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if resets, _ := b.take(); !reflect.DeepEqual(resets, s.wantResets) {
			t.Errorf("%s: resets posted = %q, want %q", s.name, resets, s.wantResets)
		}
		if got, err := d.Status(ctx); err != nil || got != s.wantState {
			t.Errorf("%s: Status = %q, %v; want %q", s.name, got, err, s.wantState)
		}
	}

	// A BMC that cannot ForceRestart power-cycles instead.
	b.allow("On", "ForceOff", "PowerCycle")
	b.take()
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if resets, _ := b.take(); !reflect.DeepEqual(resets, []string{"PowerCycle"}) {
		t.Errorf("cycle without ForceRestart posted %q, want PowerCycle", resets)
	}
	// One that can do neither says so.
	b.allow("On", "ForceOff")
	if err := d.Cycle(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "ForceRestart, PowerCycle") {
		t.Errorf("Cycle = %v, want ErrUnsupported naming the reset types", err)
	}
}

func TestRedfishBootOnceFromNetwork(t *testing.T) {
	tests := []struct {
		firmware string
		want     map[string]any
	}{
		{"", map[string]any{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}},
		{api.FirmwareUEFI, map[string]any{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe", "BootSourceOverrideMode": "UEFI"}},
	}
	for _, tt := range tests {
		t.Run("firmware "+tt.firmware, func(t *testing.T) {
			b, srv := newFakeBMC(t)
			m := redfishMachine(srv.URL, bmcPassword)
			m.Status.Firmware = tt.firmware
			d, err := For(m, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.BootOnceFromNetwork(context.Background()); err != nil {
				t.Fatal(err)
			}
			bodies, ifMatch := b.patched()
			if want := []map[string]any{{"Boot": tt.want}}; !reflect.DeepEqual(bodies, want) {
				t.Errorf("PATCH bodies = %v, want %v", bodies, want)
			}
			if !reflect.DeepEqual(ifMatch, []string{bmcETag}) {
				t.Errorf("If-Match = %q, want the system's ETag %q", ifMatch, bmcETag)
			}
		})
	}
}

func TestRedfishAddressNamesTheSystem(t *testing.T) {
	b, srv := newFakeBMC(t)
	d, err := For(redfishMachine(srv.URL+"/redfish/v1/Systems/System.Embedded.1", bmcPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, reqs := b.take(); !reflect.DeepEqual(reqs, []string{"GET /redfish/v1/Systems/System.Embedded.1"}) {
		t.Errorf("requests = %q, want only the named system", reqs)
	}
}

func TestRedfishErrors(t *testing.T) {
	_, srv := newFakeBMC(t)
	t.Run("wrong password", func(t *testing.T) {
		d, err := For(redfishMachine(srv.URL, "wrong"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Status(context.Background())
		for _, want := range []string{"node2", "401 Unauthorized", "credentials included with this request are missing or invalid", "spec.power.password"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Status = %v, want an error containing %q", err, want)
			}
		}
	})
	t.Run("self-signed certificate", func(t *testing.T) {
		m := redfishMachine(srv.URL, bmcPassword)
		m.Spec.Power.InsecureSkipVerify = false
		d, err := For(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "spec.power.insecureSkipVerify") {
			t.Errorf("Status = %v, want a certificate error pointing at spec.power.insecureSkipVerify", err)
		}
	})
}
