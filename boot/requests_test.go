package boot

import (
	"strings"
	"testing"
)

// TestParseReport: what a report may hold, and errors that name the field.
func TestParseReport(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7Xr3CV9ZJ6aJqzCgH8vxqPqVJ8Qz7kT9Y9A1d7Xh3F root@n1"
	tests := []struct {
		name, ctype, body string
		wantErr           string // "" for none
		wantIPs           int
	}{
		{"the test guest's form", "application/x-www-form-urlencoded", "ip=10.0.0.5&hostname=n1&mac=52:54:00:aa:bb:01&ssh_host_key=" + strings.ReplaceAll(key, " ", "+") + "&result=ok", "", 1},
		{"a form without a content type", "", "ip=10.0.0.5", "", 1},
		{"a failed DHCP sends ip=", "", "ip=&result=ok", "", 0},
		{"JSON", "application/json; charset=utf-8", `{"ips":["10.0.0.5","fd00::5"],"sshHostKeys":["` + key + `"]}`, "", 2},
		{"not an address", "", "ip=10.0.0.5&ip=evil", `ips[1]: "evil" is not an IP address`, 0},
		{"two keys in one value", "", "ssh_host_key=ssh-rsa+AAAA%0Assh-rsa+BBBB", "sshHostKeys[0]: contains a control character", 0},
		{"not a key type", "application/json", `{"sshHostKeys":["rm -rf /"]}`, `sshHostKeys[0]: key type "rm" is not an SSH key type`, 0},
		{"not base64", "application/json", `{"sshHostKeys":["ssh-ed25519 !!!"]}`, "sshHostKeys[0]: the key is not base64", 0},
		{"too many addresses", "", strings.Repeat("ip=10.0.0.1&", 17), "ips: has 17 addresses, at most 16", 0},
		{"another content type", "text/plain", "ip=10.0.0.5", `content type "text/plain"`, 0},
		{"broken JSON", "application/json", `{"ips":`, "report: unexpected end of JSON input", 0},
		{"too large", "", "message=" + strings.Repeat("x", maxReportBytes), "the body is over", 0},
	}
	for _, tt := range tests {
		rep, err := parseReport(tt.ctype, strings.NewReader(tt.body))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.wantErr)
		case tt.wantErr == "" && len(rep.IPs) != tt.wantIPs:
			t.Errorf("%s: addresses %q, want %d", tt.name, rep.IPs, tt.wantIPs)
		}
	}
}

// TestParseEntryQuery: /boot.ipxe takes one MAC, in any case.
func TestParseEntryQuery(t *testing.T) {
	tests := []struct{ query, want, wantErr string }{
		{"mac=52:54:00:AA:BB:01", "52:54:00:aa:bb:01", ""},
		{"mac=52:54:00:aa:bb:01&busid=x", "52:54:00:aa:bb:01", ""},
		{"", "", "mac: want it once"},
		{"mac=52:54:00:aa:bb:01&mac=52:54:00:aa:bb:02", "", "mac: want it once"},
		{"mac=${net0/mac}", "", `"${net0/mac}" is not a MAC address`},
		{"mac=52-54-00-aa-bb-01", "", "is not a MAC address"},
		{"mac=%zz", "", "query:"},
	}
	for _, tt := range tests {
		hw, err := parseEntryQuery(tt.query)
		switch {
		case tt.wantErr == "" && (err != nil || hw.String() != tt.want):
			t.Errorf("%q: %v, %v; want %s", tt.query, hw, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: error %v, want one with %q", tt.query, err, tt.wantErr)
		}
	}
}
