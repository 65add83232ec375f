package boot

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// The decoders of what unauthenticated clients on the provisioning network
// send the HTTP side. Each checks everything before anything is looked up,
// and names the part that is wrong. FuzzEntryQuery, FuzzBootPaths and
// FuzzReport feed them arbitrary input.

// parseEntryQuery reads the query of /boot.ipxe: mac=MAC, once, in the
// form 52:54:00:12:34:56 (any case). Other parameters are ignored, as
// iPXE's settings may add some.
func parseEntryQuery(raw string) (net.HardwareAddr, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("query: %v", err)
	}
	macs := q["mac"]
	if len(macs) != 1 {
		return nil, errors.New("mac: want it once, as ?mac=${net0/mac}")
	}
	mac, es := api.ValidateMAC("mac", macs[0])
	if len(es) > 0 {
		return nil, es
	}
	return net.ParseMAC(mac)
}

// bootRef names one boot of one machine in a URL:
// /machines/NAME/boots/ID/…
type bootRef struct{ machine, boot string }

var (
	bootIDRE     = regexp.MustCompile(`^[0-9a-f]{32}$`)
	artifactIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)
	fileNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
)

// parseMachineName checks the NAME of /machines/NAME/….
func parseMachineName(name string) error {
	if es := api.ValidateName("machine", name); len(es) > 0 {
		return es
	}
	return nil
}

// parseBootRef checks the NAME and ID of /machines/NAME/boots/ID/….
func parseBootRef(name, boot string) (bootRef, error) {
	if err := parseMachineName(name); err != nil {
		return bootRef{}, err
	}
	if !bootIDRE.MatchString(boot) {
		return bootRef{}, fmt.Errorf("boot: %q is not a boot id (32 hex digits)", truncate(boot))
	}
	return bootRef{machine: name, boot: boot}, nil
}

// parseFileName checks the FILE of …/files/FILE: a profile's file names
// are letters, digits, '.', '_' and '-', starting with a letter or digit.
func parseFileName(file string) error {
	if !fileNameRE.MatchString(file) || strings.Contains(file, "..") {
		return fmt.Errorf("file: %q is not a file name", truncate(file))
	}
	return nil
}

// parseArtifact checks the ID and FILE of …/artifacts/ID/FILE. FILE is
// only the name the artifact is served under (the last part of its
// source URL, path-escaped): anything printable without a slash.
func parseArtifact(id, file string) error {
	if !artifactIDRE.MatchString(id) {
		return fmt.Errorf("artifact: %q is not an artifact id (16 hex digits)", truncate(id))
	}
	if file == "" || len(file) > 255 || strings.ContainsAny(file, "/\x00") {
		return fmt.Errorf("artifact file: %q is not a file name", truncate(file))
	}
	for _, r := range file {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("artifact file: %q contains a control character", truncate(file))
		}
	}
	return nil
}

// Report is what a booted machine tells the service.
type Report struct {
	IPs         []string `json:"ips"`
	Hostname    string   `json:"hostname"`
	SSHHostKeys []string `json:"sshHostKeys"`
	// Result is "ok" when an installer finished (or a stateless boot
	// came up); anything else is a failure, described by Message.
	Result  string `json:"result"`
	Message string `json:"message"`
}

// Limits of a report.
const (
	maxReportBytes = 64 << 10
	maxReportIPs   = 16
	maxReportKeys  = 16
	maxHostKey     = 8 << 10
	maxResult      = 64
	maxMessage     = 4 << 10
)

// parseReport reads a report body: JSON (Content-Type application/json),
// or a form (application/x-www-form-urlencoded, the default) with ip,
// hostname, ssh_host_key (ip and ssh_host_key repeatable), result and
// message. It checks every field: addresses must be IP addresses, host
// keys authorized_keys lines of an SSH key type with a base64 key.
func parseReport(contentType string, body io.Reader) (Report, error) {
	data, err := io.ReadAll(io.LimitReader(body, maxReportBytes+1))
	if err != nil {
		return Report{}, fmt.Errorf("report: reading the body: %v", err)
	}
	if len(data) > maxReportBytes {
		return Report{}, fmt.Errorf("report: the body is over %d bytes", maxReportBytes)
	}
	var rep Report
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "application/json":
		if err := json.Unmarshal(data, &rep); err != nil {
			return Report{}, fmt.Errorf("report: %v", err)
		}
	case "", "application/x-www-form-urlencoded":
		f, err := url.ParseQuery(string(data))
		if err != nil {
			return Report{}, fmt.Errorf("report: %v", err)
		}
		rep = Report{IPs: f["ip"], Hostname: f.Get("hostname"), SSHHostKeys: f["ssh_host_key"],
			Result: f.Get("result"), Message: f.Get("message")}
	default:
		return Report{}, fmt.Errorf("report: content type %q: send application/json or a form", truncate(contentType))
	}
	return rep, rep.check()
}

func (r *Report) check() error {
	var es api.FieldErrors
	if len(r.IPs) > maxReportIPs {
		es.Add("ips", "has %d addresses, at most %d", len(r.IPs), maxReportIPs)
	}
	ips := r.IPs[:0:0]
	for i, s := range r.IPs {
		if s == "" {
			continue // a guest whose DHCP failed sends ip=
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			es.Add(fmt.Sprintf("ips[%d]", i), "%q is not an IP address", truncate(s))
			continue
		}
		ips = append(ips, a.String())
	}
	r.IPs = ips
	if len(r.Hostname) > 253 {
		es.Add("hostname", "is longer than 253 characters")
	}
	if len(r.SSHHostKeys) > maxReportKeys {
		es.Add("sshHostKeys", "has %d keys, at most %d", len(r.SSHHostKeys), maxReportKeys)
	}
	for i, k := range r.SSHHostKeys {
		if why := checkHostKey(k); why != "" {
			es.Add(fmt.Sprintf("sshHostKeys[%d]", i), "%s", why)
		}
	}
	if len(r.Result) > maxResult {
		es.Add("result", "is longer than %d characters", maxResult)
	}
	if len(r.Message) > maxMessage {
		es.Add("message", "is longer than %d characters", maxMessage)
	}
	if len(es) > 0 {
		return fmt.Errorf("report: %w", es)
	}
	return nil
}

// checkHostKey says why k is not an SSH public key in authorized_keys
// form ("TYPE BASE64 [COMMENT]"), or "".
func checkHostKey(k string) string {
	if len(k) > maxHostKey {
		return fmt.Sprintf("is longer than %d bytes", maxHostKey)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return "contains a control character (one key per value)"
		}
	}
	f := strings.Fields(k)
	if len(f) < 2 {
		return fmt.Sprintf("%q is not TYPE KEY [COMMENT]", truncate(k))
	}
	typ := f[0]
	if !strings.HasPrefix(typ, "ssh-") && !strings.HasPrefix(typ, "ecdsa-") && !strings.HasPrefix(typ, "sk-") {
		return fmt.Sprintf("key type %q is not an SSH key type", truncate(typ))
	}
	if _, err := base64.StdEncoding.DecodeString(f[1]); err != nil {
		return "the key is not base64"
	}
	return ""
}

// truncate shortens what a client sent for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
