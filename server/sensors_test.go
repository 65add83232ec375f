package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

// bmcSim runs openipmi's ipmi_sim on loopback as a BMC (user admin,
// password pw) with three sensors in its SDR repository, and returns its
// address. The records' M factors make the raw readings 45 degrees C,
// 5400 RPM and 120 Watts.
func bmcSim(t *testing.T) string {
	t.Helper()
	for _, prog := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s is not installed (apt-get install openipmi ipmitool): %v", prog, err)
		}
	}
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	lan := fmt.Sprintf("name \"hearth-test\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 %d\n    priv_limit admin\n"+
		"    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n"+
		"  chassis_control \"%s\"\n  user 2 true \"admin\" \"pw\" admin 10 none md2 md5 straight\n", port, filepath.Join(dir, "chassis.sh"))
	var cmds strings.Builder
	cmds.WriteString("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n")
	for i, s := range []struct {
		typ, unit, m, raw int
		name              string
	}{{0x01, 1, 1, 45, "CPU Temp"}, {0x04, 18, 50, 108, "FAN 1"}, {0x0b, 6, 2, 60, "PS1 Power"}} {
		num := i + 1
		rec := []int{0x20, 0x00, num, 0x03, 0x01, 0x7f, 0x68, s.typ, 0x01, 0, 0, 0, 0, 0, 0, 0x00, s.unit, 0x00, 0x00,
			s.m, 0, 0, 0, 0, 0, 0x00, 0, 0, 0, 0xff, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0 | len(s.name)}
		for _, c := range s.name {
			rec = append(rec, int(c))
		}
		rec = append([]int{num, 0, 0x51, 0x01, len(rec)}, rec...)
		cmds.WriteString("main_sdr_add 0x20")
		for _, x := range rec {
			fmt.Fprintf(&cmds, " 0x%02x", x)
		}
		fmt.Fprintf(&cmds, "\nsensor_add 0x20 0 %d %d 0x01\nsensor_set_value 0x20 0 %d %d 0\n", num, s.typ, num, s.raw)
	}
	cmds.WriteString("mc_enable 0x20\n")
	// The chassis: ipmi_sim asks this script for the power state and to
	// change it, and it keeps the state in a file.
	chassis := "#!/bin/sh\nd=$(dirname \"$0\")\ncase $1 in\nget) echo \"power:$(cat \"$d/power\" 2>/dev/null || echo 0)\" ;;\n" +
		"set) [ \"$2\" = power ] && echo \"$3\" > \"$d/power\" ;;\nesac\n"
	for name, content := range map[string]string{"lan.conf": lan, "cmds.sim": cmds.String(), "chassis.sh": chassis} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "state"), 0o755)
	sim := exec.Command("ipmi_sim", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "cmds.sim"), "-n", "-p", "-s", filepath.Join(dir, "state"))
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sim.Process.Kill()
		sim.Wait()
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestMachineSensors: the server reads an IPMI machine's sensors from its
// BMC (ipmi_sim) with the password from the machine's Secret, serves them
// to whoever may read the Machine and to Prometheus, and to no tenant.
func TestMachineSensors(t *testing.T) {
	addr := bmcSim(t)
	// ipmi_sim does not answer Get Channel Cipher Suites: name suite 3, as
	// the power tests do, or ipmitool waits ten seconds for it each time.
	tool := filepath.Join(t.TempDir(), "ipmitool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\nexec ipmitool -C 3 \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := servertest.Start(t, func(c *server.Config) { c.Sensors = server.SensorOptions{Interval: time.Second, IPMITool: tool} })
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	tenant := env.User("a-admin", "a", api.RoleTenantAdmin)
	viewer := env.User("watcher", "", api.RoleViewer)
	sec := &api.Secret{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Secret"}, Metadata: api.ObjectMeta{Name: "bmc"},
		Spec: api.SecretSpec{StringData: map[string]string{"password": "pw"}}}
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:12:34:56", Power: api.MachinePower{Driver: api.PowerDriverIPMI, Address: addr, Username: "admin",
			PasswordSecret: &api.SecretKeyRef{Name: "bmc", Key: "password"}}}}
	plain := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node2"},
		Spec: api.MachineSpec{MAC: "52:54:00:12:34:57"}}
	for _, o := range []api.Object{sec, m, plain} {
		if _, err := env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	var got api.SensorReadings
	servertest.Eventually(t, 30*time.Second, func() error {
		if err := viewer.Do(ctx, http.MethodGet, api.PathPrefix+"/machines/node1/sensors", nil, &got); err != nil {
			return err
		}
		if got.Error != "" || len(got.Sensors) != 3 {
			return fmt.Errorf("readings %+v", got)
		}
		return nil
	})
	want := map[string]string{"CPU Temp": "45 degrees C ok", "FAN 1": "5400 RPM ok", "PS1 Power": "120 Watts ok"}
	for _, s := range got.Sensors {
		if s.Value == nil || fmt.Sprintf("%g %s %s", *s.Value, s.Unit, s.Status) != want[s.Name] {
			t.Errorf("sensor %+v, want %s", s, want[s.Name])
		}
	}
	err := tenant.Do(ctx, http.MethodGet, api.PathPrefix+"/machines/node1/sensors", nil, &got)
	wantCode(t, "a tenant reads a machine's sensors", err, http.StatusForbidden, "cluster infrastructure")
	for who, c := range map[string]*client.Client{"a host": env.Host("h1"), "a boot service": env.BootService("boot1")} {
		err = c.Do(ctx, http.MethodGet, api.PathPrefix+"/machines/node1/sensors", nil, &got)
		wantCode(t, who+" reads a machine's sensors", err, http.StatusForbidden, "not hosts or boot services")
	}
	err = env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/machines/node2/sensors", nil, &got)
	wantCode(t, "sensors of a machine without IPMI", err, http.StatusBadRequest, "has no IPMI power")
	err = viewer.Do(ctx, http.MethodGet, api.PathPrefix+"/machines/nope/sensors", nil, &got)
	wantCode(t, "sensors of no machine", err, http.StatusNotFound, "not found")

	// The leader reads them for Prometheus too.
	hc := httpsClient(env)
	servertest.Eventually(t, 30*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, env.Server.URL()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tokenOf(t, viewer))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range []string{`hearth_machine_sensor{machine="node1",sensor="CPU Temp",unit="degrees C"} 45`,
			`hearth_machine_sensor{machine="node1",sensor="FAN 1",unit="RPM"} 5400`,
			`hearth_machine_sensor_ok{machine="node1",sensor="PS1 Power"} 1`} {
			if !strings.Contains(string(body), line) {
				return fmt.Errorf("/metrics lacks %s", line)
			}
		}
		return nil
	})
	// The password is the Secret's: it is not in what anyone reads.
	if strings.Contains(servertest.JSON(got), "pw\"") {
		t.Errorf("the readings carry the BMC's password: %s", servertest.JSON(got))
	}
}

// TestMachinePowerThroughAPI: a cluster admin switches an IPMI machine on
// through the API (the dashboard's power buttons); the server reads the
// BMC's password from the Secret with the caller's right to it, and the
// action is on the machine's timeline. Whoever may not read the Secret
// (a cluster viewer, a tenant) cannot.
func TestMachinePowerThroughAPI(t *testing.T) {
	addr := bmcSim(t)
	tool := filepath.Join(t.TempDir(), "ipmitool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\nexec ipmitool -C 3 \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := servertest.Start(t, func(c *server.Config) { c.Sensors = server.SensorOptions{IPMITool: tool} })
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	tenant := env.User("a-admin", "a", api.RoleTenantAdmin)
	viewer := env.User("watcher", "", api.RoleViewer)
	sec := &api.Secret{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Secret"}, Metadata: api.ObjectMeta{Name: "bmc"},
		Spec: api.SecretSpec{StringData: map[string]string{"password": "pw"}}}
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:12:34:56", Power: api.MachinePower{Driver: api.PowerDriverIPMI, Address: addr, Username: "admin",
			PasswordSecret: &api.SecretKeyRef{Name: "bmc", Key: "password"}}}}
	for _, o := range []api.Object{sec, m} {
		if _, err := env.Admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	path := api.PathPrefix + "/machines/node1/power"
	var got api.PowerResponse
	servertest.Eventually(t, 20*time.Second, func() error { // until ipmi_sim answers
		return env.Admin.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "status"}, &got)
	})
	if got.State != "Off" {
		t.Fatalf("status: %+v, want Off", got)
	}
	if err := env.Admin.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "on"}, &got); err != nil || got.State != "On" {
		t.Fatalf("power on: %+v, %v; want On", got, err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		evs, _, err := env.Admin.List(ctx, "Event", "", client.ListOptions{FieldSelector: "involvedObject.name=node1,reason=PowerOn"})
		if err != nil || len(evs) == 0 {
			return fmt.Errorf("no PowerOn event on the machine yet (%v)", err)
		}
		return nil
	})
	err := viewer.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "off"}, &got)
	wantCode(t, "a cluster viewer switches a machine off", err, http.StatusForbidden, "viewers may not change anything")
	err = tenant.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "off"}, &got)
	wantCode(t, "a tenant switches a machine off", err, http.StatusForbidden, "cluster infrastructure")
	// A boot service discovers Machines and writes what it observes of
	// them; a host reads them: neither drives a BMC.
	err = env.Host("h1").Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "off"}, &got)
	wantCode(t, "a host switches a machine off", err, http.StatusForbidden, "hosts may only write the status")
	err = env.BootService("boot1").Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "off"}, &got)
	wantCode(t, "a boot service switches a machine off", err, http.StatusForbidden, "boot services may only discover Machines")
	// Another tenant's objects named in the path reach nothing either.
	err = tenant.Do(ctx, http.MethodPost, api.PathPrefix+"/machines/nope/power", api.PowerRequest{Action: "off"}, &got)
	wantCode(t, "a tenant powers a machine that does not exist", err, http.StatusForbidden, "cluster infrastructure")
	err = env.Admin.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "explode"}, &got)
	wantCode(t, "an unknown action", err, http.StatusUnprocessableEntity, "want on, off, cycle or status")
	if err := env.Admin.Do(ctx, http.MethodPost, path, api.PowerRequest{Action: "status"}, &got); err != nil || got.State != "On" {
		t.Errorf("after the refused requests: %+v, %v; want still On", got, err)
	}
}
