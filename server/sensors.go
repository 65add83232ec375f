package server

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/power"
	"hearth.dev/hearth/server/auth"
)

// Machines whose power is IPMI report their BMC's sensors (temperatures,
// fans, power drawn: `ipmitool sdr`). The leader reads every such machine
// each SensorOptions.Interval for Prometheus (hearth_machine_sensor), and
//
//	GET /apis/hearth.dev/v1alpha1/machines/NAME/sensors
//
// answers the last reading, reading the BMC then if it has none fresh
// (another server is the leader, or the machine is new). The right to get
// the Machine is the right to its readings (cluster admins and viewers:
// tenants never read Machines; hosts and boot services, which read
// Machines for their own work, get no readings). The server reads the
// BMC's password from its Secret with its own credential: only cluster
// admins write Machines, so no one can point the server at a BMC they
// could not reach themselves, and the password never leaves the server.

// SensorOptions are how machines' sensors are read.
type SensorOptions struct {
	// Interval between readings of every IPMI machine (default 30s).
	Interval time.Duration
	// IPMITool is the ipmitool program (default from PATH).
	IPMITool string
}

// sensorCache holds the last reading of each machine.
type sensorCache struct {
	mu sync.Mutex
	by map[string]api.SensorReadings
}

func (c *sensorCache) get(name string) (api.SensorReadings, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.by[name]
	return r, ok
}

func (c *sensorCache) put(r api.SensorReadings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]api.SensorReadings{}
	}
	c.by[r.Machine] = r
}

// keep forgets machines no longer read.
func (c *sensorCache) keep(names map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.by {
		if !names[n] {
			delete(c.by, n)
		}
	}
}

var (
	descSensor   = prometheus.NewDesc("hearth_machine_sensor", "A numeric reading of a machine's BMC sensor (ipmitool sdr), in its unit.", []string{"machine", "sensor", "unit"}, nil)
	descSensorOK = prometheus.NewDesc("hearth_machine_sensor_ok", "1 when the BMC says a sensor is ok, 0 when a threshold is crossed (nc, cr, nr).", []string{"machine", "sensor"}, nil)
	descSensorAt = prometheus.NewDesc("hearth_machine_sensors_read_timestamp_seconds", "When the machine's BMC was last read successfully.", []string{"machine"}, nil)
)

func (c *sensorCache) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSensor
	ch <- descSensorOK
	ch <- descSensorAt
}

func (c *sensorCache) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range c.by {
		if r.Error != "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descSensorAt, prometheus.GaugeValue, float64(r.Time.Unix()), name)
		seen := map[string]bool{}
		for _, s := range r.Sensors {
			if seen[s.Name] {
				continue // two sensors of one name: the first wins
			}
			seen[s.Name] = true
			if s.Value != nil {
				ch <- prometheus.MustNewConstMetric(descSensor, prometheus.GaugeValue, *s.Value, name, s.Name, s.Unit)
			}
			if s.Status != "ns" {
				ok := 0.0
				if s.Status == "ok" {
					ok = 1
				}
				ch <- prometheus.MustNewConstMetric(descSensorOK, prometheus.GaugeValue, ok, name, s.Name)
			}
		}
	}
}

func (s *Server) sensorInterval() time.Duration {
	if s.cfg.Sensors.Interval > 0 {
		return s.cfg.Sensors.Interval
	}
	return 30 * time.Second
}

// readSensors reads one machine's BMC with the server's own credential.
func (s *Server) readSensors(ctx context.Context, c *client.Client, m *api.Machine) api.SensorReadings {
	r := api.SensorReadings{Kind: "SensorReadings", Machine: m.Metadata.Name, Time: time.Now().UTC(), Sensors: []api.Sensor{}}
	resolved, err := power.ResolveSecrets(ctx, m, func(ctx context.Context, name string) (*api.Secret, error) {
		o, err := c.Get(ctx, "Secret", "", name)
		if err != nil {
			return nil, err
		}
		return o.(*api.Secret), nil
	})
	if err == nil {
		var d power.Driver
		if d, err = power.For(resolved, power.Options{IPMITool: s.cfg.Sensors.IPMITool}); err == nil {
			rd, ok := d.(power.SensorReader)
			if !ok {
				r.Error = "machine " + m.Metadata.Name + ": its power driver " + m.Spec.Power.Driver + " reads no sensors (IPMI does)"
				return r
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			r.Sensors, err = rd.Sensors(rctx)
			cancel()
		}
	}
	if err != nil {
		r.Error, r.Sensors = err.Error(), []api.Sensor{}
	}
	return r
}

// pollSensors reads every IPMI machine's sensors now and then (run by
// the leader, like the controllers).
func (s *Server) pollSensors(ctx context.Context, c *client.Client, _ *client.Recorder) error {
	t := time.NewTicker(s.sensorInterval())
	defer t.Stop()
	failing := map[string]string{}
	for {
		objs, _, err := c.List(ctx, "Machine", "", client.ListOptions{})
		if err == nil {
			names := map[string]bool{}
			var wg sync.WaitGroup
			sem := make(chan struct{}, 4)
			var mu sync.Mutex
			for _, o := range objs {
				m := o.(*api.Machine)
				if m.Spec.Power.Driver != api.PowerDriverIPMI {
					continue
				}
				names[m.Metadata.Name] = true
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					r := s.readSensors(ctx, c, m)
					if ctx.Err() != nil {
						return
					}
					s.sensors.put(r)
					mu.Lock()
					defer mu.Unlock()
					// A failing BMC is said once, and again when it recovers.
					if r.Error != failing[r.Machine] {
						if r.Error != "" {
							slog.Warn("reading a machine's sensors", "machine", r.Machine, "err", r.Error)
						} else {
							slog.Info("reading a machine's sensors works again", "machine", r.Machine)
						}
						failing[r.Machine] = r.Error
					}
				}()
			}
			wg.Wait()
			s.sensors.keep(names)
		} else if ctx.Err() == nil {
			slog.Warn("listing machines to read their sensors", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// machineSensors handles GET machines/NAME/sensors.
func (s *Server) machineSensors(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	name := r.PathValue("name")
	if err := forPeople(p, "a machine's sensors"); err != nil {
		return err
	}
	k, _ := api.KindByName("Machine")
	t := target{kind: k, name: name}
	if err := auth.Authorize(p, t.request(auth.Get)); err != nil {
		return err
	}
	if r.Method != http.MethodGet {
		return methodNotAllowed(r)
	}
	obj, err := s.store.Get(r.Context(), k, "", name)
	if err != nil {
		return err
	}
	m := obj.(*api.Machine)
	if m.Spec.Power.Driver != api.PowerDriverIPMI {
		return api.NewBadRequest("machine %s has no IPMI power (spec.power.driver is %q): only BMCs reached over IPMI report sensors", name, m.Spec.Power.Driver)
	}
	got, ok := s.sensors.get(name)
	if !ok || time.Since(got.Time) > 2*s.sensorInterval() {
		c, err := s.InternalClient()
		if err != nil {
			return err
		}
		got = s.readSensors(r.Context(), c, m)
		s.sensors.put(got)
	}
	sort.SliceStable(got.Sensors, func(i, j int) bool { return got.Sensors[i].Name < got.Sensors[j].Name })
	writeJSON(w, http.StatusOK, got)
	return nil
}
