package power

import (
	"context"
	"strconv"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Sensor is one reading of a machine's BMC (the API's type: the server
// serves it as it is).
type Sensor = api.Sensor

// SensorReader is a Driver that can read its machine's sensors: IPMI.
type SensorReader interface {
	Sensors(ctx context.Context) ([]Sensor, error)
}

// Sensors reads the BMC's sensor data records and their readings
// (`ipmitool sdr list full`: the threshold sensors, which carry numbers).
func (d *ipmi) Sensors(ctx context.Context) ([]Sensor, error) {
	out, err := d.run(ctx, "sdr", "list", "full")
	if err != nil {
		return nil, err
	}
	return ParseSDR(out), nil
}

// ParseSDR reads ipmitool's sdr list output, one sensor a line:
//
//	CPU Temp         | 45 degrees C      | ok
//	FAN 1            | 5400 RPM          | ok
//	PS1 Status       | 0x01              | ok
//	Intrusion        | Not Readable      | ns
func ParseSDR(out string) []Sensor {
	var sensors []Sensor
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) < 3 {
			continue
		}
		s := Sensor{Name: strings.TrimSpace(f[0]), Status: strings.TrimSpace(f[2])}
		reading := strings.TrimSpace(f[1])
		if s.Name == "" {
			continue
		}
		num, unit, ok := strings.Cut(reading, " ")
		if v, err := strconv.ParseFloat(num, 64); err == nil && ok && !strings.HasPrefix(num, "0x") {
			s.Value, s.Unit = &v, strings.TrimSpace(unit)
		} else {
			s.Reading = reading
		}
		sensors = append(sensors, s)
	}
	return sensors
}
