package power

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

func TestParseSDR(t *testing.T) {
	out := "CPU Temp         | 45 degrees C      | ok\n" +
		"FAN 1            | 5400 RPM          | ok\n" +
		"PS1 Input Power  | 120.50 Watts      | nc\n" +
		"PS1 Status       | 0x01              | ok\n" +
		"Intrusion        | Not Readable      | ns\n" +
		"garbage without bars\n"
	got := ParseSDR(out)
	want := []string{"CPU Temp=45 degrees C ok", "FAN 1=5400 RPM ok", "PS1 Input Power=120.5 Watts nc", "PS1 Status=(0x01) ok", "Intrusion=(Not Readable) ns"}
	if len(got) != len(want) {
		t.Fatalf("got %d sensors %+v, want %d", len(got), got, len(want))
	}
	for i, s := range got {
		v := "(" + s.Reading + ")"
		if s.Value != nil {
			v = fmt.Sprintf("%g %s", *s.Value, s.Unit)
		}
		if g := s.Name + "=" + v + " " + s.Status; g != want[i] {
			t.Errorf("sensor %d: got %q, want %q", i, g, want[i])
		}
	}
}

// simSensors are the sensors ipmi_sim's BMC has (see startIPMISim): full
// sensor records in its SDR repository (IPMI 2.0, table 43-1) and the
// raw readings; the records' M factors make them 45 degrees C, 5400 RPM
// and 120 Watts.
var simSensors = func() string {
	var b strings.Builder
	for i, s := range []struct {
		typ, unit, m, raw int
		name              string
	}{{0x01, 1, 1, 45, "CPU Temp"}, {0x04, 18, 50, 108, "FAN 1"}, {0x0b, 6, 2, 60, "PS1 Power"}} {
		num := i + 1
		rec := []int{0x20, 0x00, num, 0x03, 0x01, 0x7f, 0x68, s.typ, 0x01, // owner, sensor, entity, init, caps, type, threshold
			0, 0, 0, 0, 0, 0, // event and reading masks
			0x00, s.unit, 0x00, 0x00, // unsigned, base unit, no modifier, linear
			s.m & 0xff, (s.m >> 8) & 3, 0, 0, 0, 0, // M, tolerance, B, accuracy, exponents
			0x00, 0, 0, 0, 0xff, 0x00, // flags, nominal, normal max/min, sensor max/min
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // thresholds, hysteresis, reserved, OEM
			0xc0 | len(s.name)}
		for _, c := range s.name {
			rec = append(rec, int(c))
		}
		rec = append([]int{num, 0, 0x51, 0x01, len(rec)}, rec...)
		b.WriteString("main_sdr_add 0x20")
		for _, x := range rec {
			fmt.Fprintf(&b, " 0x%02x", x)
		}
		fmt.Fprintf(&b, "\nsensor_add 0x20 0 %d %d 0x01\nsensor_set_value 0x20 0 %d %d 0\n", num, s.typ, num, s.raw)
	}
	return b.String()
}()

func TestIPMISensorsAgainstIPMISim(t *testing.T) {
	addr, _ := startIPMISim(t)
	m := machine("node1", api.MachinePower{Driver: "ipmi", Address: addr, Username: "admin", Password: simPassword})
	d, err := For(m, Options{IPMITool: simIPMITool(t)})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := d.(SensorReader)
	if !ok {
		t.Fatalf("the IPMI driver %T reads no sensors", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []Sensor
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if got, err = r.Sensors(ctx); err == nil && len(got) > 0 {
			break
		} else if time.Since(start) > 15*time.Second {
			t.Fatalf("reading ipmi_sim's sensors: %v, %+v", err, got)
		}
	}
	want := map[string]string{"CPU Temp": "45 degrees C", "FAN 1": "5400 RPM", "PS1 Power": "120 Watts"}
	for _, s := range got {
		if s.Value == nil || fmt.Sprintf("%g %s", *s.Value, s.Unit) != want[s.Name] || s.Status != "ok" {
			t.Errorf("sensor %+v, want %s ok", s, want[s.Name])
		}
		delete(want, s.Name)
	}
	if len(want) > 0 {
		t.Errorf("sensors missing: %v (got %+v)", want, got)
	}
	// A BMC that refuses the password says so.
	bad := machine("node1", api.MachinePower{Driver: "ipmi", Address: addr, Username: "admin", Password: "wrong"})
	bd, _ := For(bad, Options{IPMITool: simIPMITool(t)})
	if _, err := bd.(SensorReader).Sensors(ctx); err == nil || !strings.Contains(err.Error(), "machine node1: ipmitool sdr list full") {
		t.Errorf("sensors with a wrong password: %v, want an error naming the machine and command", err)
	}
}
