package power

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

func machine(name string, p api.MachinePower) *api.Machine {
	m := &api.Machine{}
	m.Kind = "Machine"
	m.Metadata.Name = name
	m.Spec.MAC = "52:54:00:12:34:56"
	m.Spec.Power = p
	return m
}

func TestForErrors(t *testing.T) {
	tests := []struct {
		name  string
		power api.MachinePower
		want  string // in the error
		is    error
	}{
		{"no driver", api.MachinePower{}, "spec.power.driver is none", ErrNoDriver},
		{"unknown driver", api.MachinePower{Driver: "smoke-signals"}, "spec.power.driver", nil},
		{"ipmi without address", api.MachinePower{Driver: "ipmi"}, "spec.power.address: is required for driver ipmi", nil},
		{"ipmi bad port", api.MachinePower{Driver: "ipmi", Address: "bmc:99999"}, "spec.power.address", nil},
		{"redfish without address", api.MachinePower{Driver: "redfish"}, "spec.power.address: is required for driver redfish", nil},
		{"redfish odd path", api.MachinePower{Driver: "redfish", Address: "https://bmc/some/where"}, "spec.power.address", nil},
		{"wol with an IPv6 broadcast", api.MachinePower{Driver: "wol", WOL: &api.WakeOnLAN{Broadcast: "ff02::1"}}, "spec.power.wol.broadcast", nil},
		{"webhook missing", api.MachinePower{Driver: "webhook"}, "spec.power.webhook: is required", nil},
		{"webhook settings under another driver", api.MachinePower{Driver: "ipmi", Address: "bmc", Webhook: &api.PowerWebhook{}}, "spec.power.webhook: is set but the driver is \"ipmi\"", nil},
		{"body template calls an unknown function", api.MachinePower{Driver: "webhook", Webhook: &api.PowerWebhook{
			OnURL: "http://plug/on", OffURL: "http://plug/off", BodyTemplate: "{{nosuch .Action}}"}}, "spec.power.webhook.bodyTemplate", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := For(machine("m1", tt.power), Options{})
			if err == nil {
				t.Fatalf("For = %v, want an error containing %q", d, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "m1") {
				t.Errorf("error %q does not name the machine and contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}

func TestForPicksDriver(t *testing.T) {
	tests := []struct {
		power api.MachinePower
		want  string // the driver's String
	}{
		{api.MachinePower{Driver: "wol"}, "wol 255.255.255.255:9"},
		{api.MachinePower{Driver: "wol", WOL: &api.WakeOnLAN{Broadcast: "10.1.2.255", Port: 7}}, "wol 10.1.2.255:7"},
		{api.MachinePower{Driver: "ipmi", Address: "10.0.0.5"}, "ipmi 10.0.0.5:623"},
		{api.MachinePower{Driver: "ipmi", Address: "bmc.lab:6230"}, "ipmi bmc.lab:6230"},
		{api.MachinePower{Driver: "ipmi", Address: "fd00::5"}, "ipmi [fd00::5]:623"},
		{api.MachinePower{Driver: "ipmi", Address: "[fd00::5]:624"}, "ipmi [fd00::5]:624"},
		{api.MachinePower{Driver: "redfish", Address: "bmc.lab"}, "redfish https://bmc.lab"},
		{api.MachinePower{Driver: "redfish", Address: "https://bmc.lab:8443/redfish/v1/Systems/2/"}, "redfish https://bmc.lab:8443/redfish/v1/Systems/2"},
		{api.MachinePower{Driver: "webhook", Webhook: &api.PowerWebhook{OnURL: "http://plug/relay/0?turn=on&token=x", OffURL: "http://plug/off"}}, "webhook http://plug/relay/0?…"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			m := machine("m1", tt.power)
			before, _ := json.Marshal(m)
			d, err := For(m, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(d); got != tt.want {
				t.Errorf("driver = %q, want %q", got, tt.want)
			}
			// For applies the API's defaults to a copy.
			if after, _ := json.Marshal(m); string(after) != string(before) {
				t.Errorf("For changed the machine:\n got %s\nwant %s", after, before)
			}
		})
	}
}

func TestStateAPI(t *testing.T) {
	for s, want := range map[State]string{On: "On", Off: "Off", Unknown: "Unknown", "": "Unknown"} {
		if got := s.API(); got != want {
			t.Errorf("State(%q).API() = %q, want %q", s, got, want)
		}
	}
}
