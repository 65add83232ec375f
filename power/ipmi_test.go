package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// chassisScript is ipmi_sim's chassis_control program: ipmi_sim runs it
// as `script get power` (answering "power:1") or `script set power 0`,
// and this one keeps the state in files next to itself and logs every
// call.
const chassisScript = `#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls.log"
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)" ;;
		boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		case $1 in
		power|boot) echo "$2" > "$d/$1" ;;
		esac
		shift 2
	done ;;
esac
`

const simPassword = "s3cr3t-Pw"

// startIPMISim runs ipmi_sim as a BMC on 127.0.0.1 and returns its address
// and the directory its chassis script keeps the machine's state in.
func startIPMISim(t *testing.T) (string, string) {
	t.Helper()
	for _, prog := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s is not installed (apt-get install openipmi ipmitool): %v", prog, err)
		}
	}
	dir := t.TempDir()
	// A free UDP port: ask the kernel for one and give it back.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()

	script := filepath.Join(dir, "chassis.sh")
	lanConf := fmt.Sprintf(`name "hearth-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "admin" "%s" admin 10 none md2 md5 straight
`, port, script, simPassword)
	cmds := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n" + simSensors + "mc_enable 0x20\n"
	for name, content := range map[string]string{"chassis.sh": chassisScript, "lan.conf": lanConf, "cmds.sim": cmds} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	sim := exec.Command("ipmi_sim", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "cmds.sim"),
		"-n", "-p", "-s", filepath.Join(dir, "state"))
	var out bytes.Buffer
	sim.Stdout, sim.Stderr = &out, &out
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sim.Process.Kill()
		_ = sim.Wait()
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", out.String())
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", port), dir
}

// simIPMITool runs ipmitool with cipher suite 3 named. ipmi_sim does not
// answer Get Channel Cipher Suites, with which ipmitool picks the best
// suite a real BMC offers, and ipmitool takes ten seconds to give up
// asking before it falls back to suite 3 by itself.
func simIPMITool(t *testing.T) string {
	t.Helper()
	tool := filepath.Join(t.TempDir(), "ipmitool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\nexec ipmitool -C 3 \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return tool
}

func TestIPMIAgainstIPMISim(t *testing.T) {
	addr, dir := startIPMISim(t)
	m := machine("node1", api.MachinePower{Driver: "ipmi", Address: addr, Username: "admin", Password: simPassword})
	m.Status.Firmware = api.FirmwareUEFI
	tool := simIPMITool(t)
	d, err := For(m, Options{IPMITool: tool})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	status := func() State {
		t.Helper()
		s, err := d.Status(ctx)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		return s
	}
	// Wait until the simulator answers.
	for start := time.Now(); ; {
		if _, err := d.Status(ctx); err == nil {
			break
		} else if time.Since(start) > 10*time.Second {
			t.Fatalf("ipmi_sim does not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	calls := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "calls.log"))
		return string(b)
	}

	if s := status(); s != Off {
		t.Fatalf("initial status = %q, want off", s)
	}
	if err := d.On(ctx); err != nil {
		t.Fatalf("On: %v", err)
	}
	if s := status(); s != On {
		t.Errorf("status after On = %q, want on", s)
	}
	if err := d.Off(ctx); err != nil {
		t.Fatalf("Off: %v", err)
	}
	if s := status(); s != Off {
		t.Errorf("status after Off = %q, want off", s)
	}

	// Cycling a machine that is off turns it on.
	if err := d.Cycle(ctx); err != nil {
		t.Fatalf("Cycle while off: %v", err)
	}
	if s := status(); s != On {
		t.Errorf("status after Cycle while off = %q, want on", s)
	}
	// Cycling one that is on switches it off; the BMC switches it on
	// again a second later.
	before := calls()
	if err := d.Cycle(ctx); err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	for start := time.Now(); !strings.Contains(strings.TrimPrefix(calls(), before), "set power 1"); {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the BMC did not switch the machine on again after the cycle; calls:\n%s", strings.TrimPrefix(calls(), before))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := strings.TrimPrefix(calls(), before); !strings.Contains(got, "set power 0") {
		t.Errorf("the cycle did not switch off; calls:\n%s", got)
	}
	if s := status(); s != On {
		t.Errorf("status after Cycle = %q, want on", s)
	}

	if err := d.BootOnceFromNetwork(ctx); err != nil {
		t.Fatalf("BootOnceFromNetwork: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "boot")); strings.TrimSpace(string(b)) != "pxe" {
		t.Errorf("boot device = %q, want pxe", b)
	}

	t.Run("wrong password", func(t *testing.T) {
		m := machine("node1", api.MachinePower{Driver: "ipmi", Address: addr, Username: "admin", Password: "not-the-password"})
		d, err := For(m, Options{IPMITool: tool})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Status(ctx)
		if err == nil {
			t.Fatal("Status with a wrong password succeeded")
		}
		msg := err.Error()
		for _, want := range []string{"node1", addr, "ipmitool chassis power status", "session"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not contain %q", msg, want)
			}
		}
		if strings.Contains(msg, "not-the-password") {
			t.Errorf("error %q shows the password", msg)
		}
	})
}

// fakeIPMITool writes a script that stands in for ipmitool: it records
// its arguments and the password variables it sees, then runs body.
func fakeIPMITool(t *testing.T, body string) (tool, record string) {
	t.Helper()
	dir := t.TempDir()
	record = filepath.Join(dir, "record")
	tool = filepath.Join(dir, "ipmitool")
	script := fmt.Sprintf(`#!/bin/sh
{ echo "args: $*"; echo "IPMI_PASSWORD=${IPMI_PASSWORD-unset}"; echo "IPMITOOL_PASSWORD=${IPMITOOL_PASSWORD-unset}"; } > %q
%s
`, record, body)
	if err := os.WriteFile(tool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return tool, record
}

func TestIPMIPasswordStaysOutOfArguments(t *testing.T) {
	// The caller's environment must not override the machine's password.
	t.Setenv("IPMITOOL_PASSWORD", "from-the-environment")
	tool, record := fakeIPMITool(t, `echo "Chassis Power is on"`)
	m := machine("node1", api.MachinePower{Driver: "ipmi", Address: "bmc.lab", Username: "admin", Password: "pa ss"})
	d, err := For(m, Options{IPMITool: tool})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d.Status(context.Background()); err != nil || s != On {
		t.Fatalf("Status = %q, %v; want on", s, err)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := "args: -I lanplus -H bmc.lab -p 623 -U admin -E chassis power status\nIPMI_PASSWORD=pa ss\nIPMITOOL_PASSWORD=unset\n"
	if string(b) != want {
		t.Errorf("ipmitool ran with\n%s\nwant\n%s", b, want)
	}
}

func TestIPMIErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"stderr without the noise or the password", `echo "Unable to Get Channel Cipher Suites" >&2; echo "Error: BMC said no to pa55" >&2; exit 1`,
			"ipmitool chassis power on (BMC bmc.lab:623): exit status 1: Error: BMC said no to <password>"},
		{"timeout", `exec sleep 10`, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tool, _ := fakeIPMITool(t, tt.body)
			m := machine("node1", api.MachinePower{Driver: "ipmi", Address: "bmc.lab", Password: "pa55"})
			d, err := For(m, Options{IPMITool: tool})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err = d.On(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("On = %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "pa55") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}

	t.Run("ipmitool missing", func(t *testing.T) {
		m := machine("node1", api.MachinePower{Driver: "ipmi", Address: "bmc.lab"})
		d, err := For(m, Options{IPMITool: "ipmitool-that-is-not-installed"})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.On(context.Background()); !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install ipmitool") {
			t.Errorf("On = %v, want exec.ErrNotFound with an install hint", err)
		}
	})
}
