package v1alpha1

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"text/template/parse"
	"time"
)

// FieldError is one thing wrong with an object, at a field path such as
// spec.subnets[1].cidr.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Detail }

// FieldErrors is every problem found in one object. Validation collects all
// of them instead of stopping at the first, so one edit fixes a file.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Add appends an error at path with a printf-style detail.
func (es *FieldErrors) Add(path, format string, args ...any) {
	*es = append(*es, FieldError{Field: path, Detail: fmt.Sprintf(format, args...)})
}

// Err returns es as an error, or nil when it is empty.
func (es FieldErrors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Defaulter fills in defaults on a spec before validation.
type Defaulter interface {
	Default()
}

// Validator checks a spec. path is the prefix of every field path it
// reports ("spec").
type Validator interface {
	Validate(path string) FieldErrors
}

// CreateValidator checks what only a new object must meet: rules added
// after objects that break them were stored, which those objects may keep
// (their UpdateValidator lets them) but no new object may take up.
type CreateValidator interface {
	ValidateCreate(path string) FieldErrors
}

// UpdateValidator checks what may not change between the stored spec and a
// new one (a network's VNI, say). old has the same type as the receiver.
type UpdateValidator interface {
	ValidateUpdate(path string, old any) FieldErrors
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateName checks an object name: a DNS label of at most 63 characters,
// so names can become hostnames, interface name parts and DNS records.
func ValidateName(path, name string) FieldErrors {
	var es FieldErrors
	switch {
	case name == "":
		es.Add(path, "is required")
	case len(name) > 63:
		es.Add(path, "%q is longer than 63 characters", name)
	case !dnsLabel.MatchString(name):
		es.Add(path, "%q must be lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return es
}

var labelKey = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
var labelValue = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)

// ValidateLabels checks label keys and values (Kubernetes syntax).
func ValidateLabels(path string, labels map[string]string) FieldErrors {
	var es FieldErrors
	for k, v := range labels {
		if len(k) > 253 || !labelKey.MatchString(k) {
			es.Add(path, "key %q is not a valid label key", k)
		}
		if len(v) > 63 || !labelValue.MatchString(v) {
			es.Add(path+"."+k, "value %q is not a valid label value", v)
		}
	}
	return es
}

// ValidateCIDR checks that s is a CIDR prefix such as 10.0.0.0/24, with no
// host bits set.
func ValidateCIDR(path, s string) (netip.Prefix, FieldErrors) {
	var es FieldErrors
	if s == "" {
		es.Add(path, "is required")
		return netip.Prefix{}, es
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		es.Add(path, "%q is not a CIDR", s)
		return netip.Prefix{}, es
	}
	if p.Masked() != p {
		es.Add(path, "%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, es
}

// ValidateIP checks that s is an IP address.
func ValidateIP(path, s string) (netip.Addr, FieldErrors) {
	var es FieldErrors
	a, err := netip.ParseAddr(s)
	if err != nil {
		es.Add(path, "%q is not an IP address", s)
	}
	return a, es
}

// ValidateMAC checks a MAC address in the colon form 52:54:00:12:34:56 and
// returns it in lowercase.
func ValidateMAC(path, s string) (string, FieldErrors) {
	var es FieldErrors
	m := strings.ToLower(s)
	if !macRE.MatchString(m) {
		es.Add(path, "%q is not a MAC address (want the form 52:54:00:12:34:56)", s)
	}
	return m, es
}

var macRE = regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`)

// ValidateOneOf checks that s is one of the allowed values.
func ValidateOneOf(path, s string, allowed ...string) FieldErrors {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	var es FieldErrors
	es.Add(path, "%q is not one of %s", s, strings.Join(allowed, ", "))
	return es
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ValidateHostname checks a host name: one or more DNS labels joined by
// dots ("node1" or "node1.lab.example"), at most 253 characters.
func ValidateHostname(path, s string) FieldErrors {
	var es FieldErrors
	switch {
	case len(s) > 253:
		es.Add(path, "%q is longer than 253 characters", s)
	case !hostnameRE.MatchString(s):
		es.Add(path, "%q is not a host name (want lowercase DNS labels joined by dots, such as node1.lab.example)", s)
	default:
		for _, l := range strings.Split(s, ".") {
			if len(l) > 63 {
				es.Add(path, "%q has a label longer than 63 characters", s)
				break
			}
		}
	}
	return es
}

// ValidateURL checks that s is an absolute http or https URL with a host,
// the only kinds the agents and the boot service fetch from.
func ValidateURL(path, s string) FieldErrors {
	var es FieldErrors
	if s == "" {
		es.Add(path, "is required")
		return es
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		es.Add(path, "%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		es.Add(path, "%q is not an http or https URL", s)
	case u.Host == "":
		es.Add(path, "%q has no host", s)
	}
	return es
}

// ValidateArtifactURL checks the form of where a kernel, initrd or image
// comes from: an http or https URL, or file:///absolute/path for a file
// already on the machine that uses it (a host for shared images, the boot
// service for profiles), which is how a lab without a web server serves
// its own builds. Who may write file:// URLs (cluster admins, in shared
// Images and MachineProfiles) is the API server's to check
// (server/admission), and the agents and the boot service read such files
// only under the directories they are told to allow.
func ValidateArtifactURL(path, s string) FieldErrors {
	if u, err := url.Parse(s); err == nil && u.Scheme == "file" {
		var es FieldErrors
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			es.Add(path, "%q must be file:///absolute/path", s)
		}
		return es
	}
	return ValidateURL(path, s)
}

// FetchAddrRefusal says why Hearth never fetches an image, kernel or
// initrd from the address ip, or "" if it may. Refused are the addresses
// that reach the fetching machine itself or its cloud's services rather
// than a server of the lab: loopback (where etcd, the agent's endpoints
// and anything else local listen), unspecified ("this host"), link-local
// (169.254.0.0/16, fe80::/10) and with it the metadata address
// 169.254.169.254. An IPv4 address written as IPv6 (::ffff:127.0.0.1) is
// judged as IPv4.
//
// It is the one policy of both places that check: the API server on the
// addresses written in a URL, and the downloads of agents and the boot
// service on every address they connect to, after DNS and redirects.
func FetchAddrRefusal(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "is not an IP address"
	case ip == metadataAddr:
		return "is the metadata address, which answers with the fetching machine's own secrets"
	case ip.IsUnspecified() || (ip.Is4() && ip.As4()[0] == 0):
		return "is an unspecified address (this host)"
	case ip.IsLoopback():
		return "is a loopback address (this host)"
	case ip.IsLinkLocalUnicast():
		return "is a link-local address"
	}
	return ""
}

var metadataAddr = netip.AddrFrom4([4]byte{169, 254, 169, 254})

var checksumRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidateChecksum checks a content checksum written as "sha256:" and 64
// lowercase hex digits, the form `sha256sum` prints.
func ValidateChecksum(path, s string) FieldErrors {
	var es FieldErrors
	if !checksumRE.MatchString(s) {
		es.Add(path, "%q is not a checksum (want \"sha256:\" and 64 lowercase hex digits)", s)
	}
	return es
}

// ValidatePort checks a TCP or UDP port number.
func ValidatePort(path string, p int) FieldErrors {
	var es FieldErrors
	if p < 1 || p > 65535 {
		es.Add(path, "%d is not a port (1 to 65535)", p)
	}
	return es
}

// ValidateTemplate checks that s parses as a Go text/template. Functions are
// not checked here because the renderer, not the API, decides which exist;
// a syntax error is still caught when the object is written rather than when
// a machine boots.
func ValidateTemplate(path, s string) FieldErrors {
	var es FieldErrors
	t := parse.New("t")
	t.Mode = parse.SkipFuncCheck
	if _, err := t.Parse(s, "", "", map[string]*parse.Tree{}); err != nil {
		// Errors read "template: t:LINE: what"; the path already says
		// which template it is.
		msg, ok := strings.CutPrefix(err.Error(), "template: t:")
		if ok {
			msg = "line " + msg
		}
		es.Add(path, "is not a valid template: %s", msg)
	}
	return es
}

// Architectures Hearth boots and runs. Names follow the kernel's (uname -m)
// spelling except arm64, the name distributions use for their images.
const (
	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
)

// NormalizeArch maps the other common spellings of an architecture (Go's
// amd64, the kernel's aarch64) to the names the API uses, so a profile
// written with either matches.
func NormalizeArch(a string) string {
	switch strings.ToLower(a) {
	case "x86_64", "amd64", "x86-64", "x64":
		return ArchX86_64
	case "arm64", "aarch64":
		return ArchARM64
	}
	return a
}

// ValidateArch checks an architecture name (after NormalizeArch).
func ValidateArch(path, a string) FieldErrors {
	return ValidateOneOf(path, a, ArchX86_64, ArchARM64)
}

// Redactor is a spec that holds credentials (a BMC password, a smart
// plug's API token). The API serves them only to cluster admins; for
// anyone else Redact blanks them, in a copy.
type Redactor interface {
	Redact()
}

// SpecFollower is a status part of which follows from the spec, written
// by the server in the same transaction as the spec change so that the
// two never disagree and no second write is needed: a VirtualMachine
// bound to a host is Scheduled in the write that binds it. oldSpec is nil
// on a create.
type SpecFollower interface {
	FollowSpec(m *ObjectMeta, spec, oldSpec any, now time.Time)
}

// FollowSpec updates what obj's status derives from its spec, given the
// stored object (nil on a create).
func FollowSpec(obj, old Object, now time.Time) {
	f, ok := obj.StatusAny().(SpecFollower)
	if !ok {
		return
	}
	var oldSpec any
	if old != nil {
		oldSpec = old.SpecAny()
	}
	f.FollowSpec(obj.GetMetadata(), obj.SpecAny(), oldSpec, now.UTC())
}
