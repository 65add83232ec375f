package v1alpha1

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Machine is a bare-metal computer Hearth boots over the network. An
// unknown MAC that network-boots becomes a Machine in phase Discovered; it
// is matched to a MachineProfile, approved (by a person or by the
// profile's autoApprove), boots the profile, and reports back its addresses
// and SSH host keys. Installed machines boot from their disk afterwards;
// stateless ones boot the profile every time. Each step is an Event on the
// machine, so its boot timeline is `hearth events machine/NAME`.
type Machine = Resource[MachineSpec, MachineStatus]

type MachineSpec struct {
	// MAC of the interface the machine network-boots from; it is how the
	// boot service recognises the machine. Stored in lowercase.
	MAC string `json:"mac"`
	// Architecture is x86_64 or arm64. Discovery fills it in from the
	// client architecture the firmware sends (DHCP option 93); empty means
	// not yet known.
	Architecture string `json:"architecture,omitempty"`
	// Profile names the MachineProfile to boot, overriding selectors.
	// Empty lets the profiles' selectors decide.
	Profile string `json:"profile,omitempty"`
	// Approved lets the machine boot its profile. Until then it gets no
	// boot file, so a stray machine on the provisioning network is never
	// installed over. A profile with autoApprove approves its machines
	// without this.
	Approved bool `json:"approved,omitempty"`
	// Site the machine is in, for profiles' selector.sites.
	Site string `json:"site,omitempty"`
	// Hostname the machine is given (default its name).
	Hostname string `json:"hostname,omitempty"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Power says how Hearth turns the machine on and off.
	Power MachinePower `json:"power,omitempty"`
	// ReinstallRequested asks for the profile's installer to run again: an
	// installed machine whose status.installedAt is before this time boots
	// the installer instead of its disk on its next boot. A time rather
	// than a flag, so nothing has to clear it afterwards.
	ReinstallRequested *time.Time `json:"reinstallRequested,omitempty"`
}

// MachinePower is how a machine's power is controlled.
type MachinePower struct {
	// Driver is none, wol, ipmi, redfish or webhook (default none: a
	// person presses the button).
	Driver string `json:"driver,omitempty"`
	// Address of the BMC: host or host:port for ipmi, host or https URL
	// for redfish.
	Address string `json:"address,omitempty"`
	// Username is the BMC account's (ipmi, redfish).
	Username string `json:"username,omitempty"`
	// PasswordSecret names the Secret key that holds the BMC's password.
	// Give Hearth a BMC account that can do no more than power control.
	PasswordSecret *SecretKeyRef `json:"passwordSecret,omitempty"`
	// Password is the BMC's password written into the Machine itself, in
	// plain text. Deprecated: no new inline password is accepted (use
	// passwordSecret); one stored by an older Hearth keeps working until
	// it is removed. Only cluster admins read it back.
	Password string `json:"password,omitempty" openapi:"deprecated"`
	// InsecureSkipVerify accepts a Redfish BMC's self-signed certificate.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
	// WOL configures Wake-on-LAN (driver wol). WoL can only turn a machine
	// on; Hearth cannot turn it off or read its state.
	WOL *WakeOnLAN `json:"wol,omitempty"`
	// Webhook calls URLs to switch power (driver webhook), for smart plugs
	// and home-automation hubs.
	Webhook *PowerWebhook `json:"webhook,omitempty"`
}

// WakeOnLAN says where the magic packet goes.
type WakeOnLAN struct {
	// Broadcast address the packet is sent to (default 255.255.255.255).
	Broadcast string `json:"broadcast,omitempty"`
	// Port is the UDP port (default 9, the discard port).
	Port int `json:"port,omitempty"`
}

// PowerWebhook switches power by calling URLs.
type PowerWebhook struct {
	// OnURL and OffURL are called to turn the machine on and off.
	OnURL  string `json:"onURL"`
	OffURL string `json:"offURL"` // see OnURL
	// Method is the HTTP method for the on and off calls (default POST).
	Method string `json:"method,omitempty"`
	// BodyTemplate is a Go template for the request body of the on and off
	// calls; it gets the machine and the wanted state ("on" or "off").
	BodyTemplate string `json:"bodyTemplate,omitempty"`
	// Headers are sent with every call, with their values written here
	// (Content-Type, say). Credentials (an API token) go in SecretHeaders:
	// a header whose name looks like one (Authorization, X-Api-Key, …) is
	// not accepted here any more. Only cluster admins read these values
	// back; everyone else sees them empty.
	Headers map[string]string `json:"headers,omitempty"`
	// SecretHeaders are sent with every call, with their values read from
	// Secrets when the driver runs.
	SecretHeaders []SecretHeader `json:"secretHeaders,omitempty"`
	// StatusURL, when set, is fetched with GET to read the power state:
	// the machine is on when the response body matches StatusOnMatch.
	StatusURL string `json:"statusURL,omitempty"`
	// StatusOnMatch is a regular expression (default DefaultStatusOnMatch,
	// which knows the common smart plugs' answers).
	StatusOnMatch string `json:"statusOnMatch,omitempty"`
}

// SecretHeader is an HTTP header whose value is in a Secret.
type SecretHeader struct {
	// Name of the header (Authorization, say).
	Name      string       `json:"name"`
	ValueFrom HeaderSource `json:"valueFrom"`
}

// HeaderSource says where a header's value comes from.
type HeaderSource struct {
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty"`
}

// Redact blanks the power credentials: the BMC password and the values
// of the webhook's headers (their names stay, to show they are set).
func (s *MachineSpec) Redact() {
	s.Power.Password = ""
	if w := s.Power.Webhook; w != nil && len(w.Headers) > 0 {
		h := make(map[string]string, len(w.Headers))
		for k := range w.Headers {
			h[k] = ""
		}
		c := *w
		c.Headers = h
		s.Power.Webhook = &c
	}
}

type MachineStatus struct {
	CommonStatus `json:",inline"`
	// VendorClass is what the firmware sent in DHCP option 60
	// ("PXEClient:Arch:00007:UNDI:003016", say).
	VendorClass string `json:"vendorClass,omitempty"`
	// UUID is the machine's SMBIOS UUID from DHCP option 97.
	UUID string `json:"uuid,omitempty"`
	// Firmware is bios or uefi, from DHCP option 93; it picks the iPXE
	// binary the machine gets.
	Firmware string `json:"firmware,omitempty"`
	// MatchedProfile is the profile the machine boots (spec.profile or the
	// best selector match).
	MatchedProfile string `json:"matchedProfile,omitempty"`
	// Addresses the machine has: from its DHCP lease and its report.
	Addresses []string `json:"addresses,omitempty"`
	// SSHHostKeys the booted machine reported, in authorized_keys form, so
	// `ssh` can trust it on first contact.
	SSHHostKeys []string `json:"sshHostKeys,omitempty"`
	// InstalledAt is when the installer last reported success.
	InstalledAt *time.Time `json:"installedAt,omitempty"`
	// LastBoot is when the machine last fetched its boot file; LastSeen
	// when the boot service last heard from it at all.
	LastBoot *time.Time `json:"lastBoot,omitempty"`
	LastSeen *time.Time `json:"lastSeen,omitempty"`
	// PowerState is On, Off or Unknown, as the power driver last read it.
	PowerState string `json:"powerState,omitempty"`
}

// Machine phases, in the order a machine goes through them.
const (
	// MachineDiscovered: it network-booted and is waiting for approval.
	MachineDiscovered = "Discovered"
	// MachineApproved: approved and matched, waiting for its next boot.
	MachineApproved = "Approved"
	// MachineProvisioning: it fetched its profile's boot files.
	MachineProvisioning = "Provisioning"
	// MachineInstalled: the installer reported success; the machine boots
	// from its disk from now on.
	MachineInstalled = "Installed"
	// MachineReady: the booted system reported its addresses and SSH host
	// keys.
	MachineReady = "Ready"
	// MachineFailed: a step failed; the conditions and events say which.
	MachineFailed = "Failed"
)

// Power drivers.
const (
	PowerDriverNone    = "none"
	PowerDriverWOL     = "wol"
	PowerDriverIPMI    = "ipmi"
	PowerDriverRedfish = "redfish"
	PowerDriverWebhook = "webhook"
)

// Machine power states (status.powerState).
const (
	MachinePowerOn      = "On"
	MachinePowerOff     = "Off"
	MachinePowerUnknown = "Unknown"
)

// Firmware types.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
)

// DefaultStatusOnMatch recognises "on" in the usual smart-plug answers:
// Shelly's {"ison":true} and {"output":true}, Tasmota's {"POWER":"ON"},
// Home Assistant's {"state":"on"}, and a bare "on".
const DefaultStatusOnMatch = `(?i)^\s*"?on"?\s*$|"(ison|on|output)"\s*:\s*true|"(power|state|status)"\s*:\s*"on"`

func (s *MachineSpec) Default() {
	s.MAC = strings.ToLower(strings.TrimSpace(s.MAC))
	if s.Architecture != "" {
		s.Architecture = NormalizeArch(s.Architecture)
	}
	p := &s.Power
	if p.Driver == "" {
		p.Driver = PowerDriverNone
	}
	if p.Driver == PowerDriverWOL {
		if p.WOL == nil {
			p.WOL = &WakeOnLAN{}
		}
		if p.WOL.Broadcast == "" {
			p.WOL.Broadcast = "255.255.255.255"
		}
		if p.WOL.Port == 0 {
			p.WOL.Port = 9
		}
	}
	if w := p.Webhook; w != nil {
		if w.Method == "" {
			w.Method = http.MethodPost
		}
		if w.StatusURL != "" && w.StatusOnMatch == "" {
			w.StatusOnMatch = DefaultStatusOnMatch
		}
	}
}

func (s *MachineSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.MAC == "" {
		es.Add(path+".mac", "is required")
	} else {
		_, e := ValidateMAC(path+".mac", s.MAC)
		es = append(es, e...)
	}
	if s.Architecture != "" {
		es = append(es, ValidateArch(path+".architecture", s.Architecture)...)
	}
	if s.Profile != "" {
		es = append(es, ValidateName(path+".profile", s.Profile)...)
	}
	if s.Site != "" {
		es = append(es, ValidateName(path+".site", s.Site)...)
	}
	if s.Hostname != "" {
		es = append(es, ValidateHostname(path+".hostname", s.Hostname)...)
	}
	es = append(es, s.Power.validate(path+".power")...)
	return es
}

func (p *MachinePower) validate(path string) FieldErrors {
	var es FieldErrors
	e := ValidateOneOf(path+".driver", p.Driver, PowerDriverNone, PowerDriverWOL, PowerDriverIPMI, PowerDriverRedfish, PowerDriverWebhook)
	es = append(es, e...)
	// Settings for a driver that is not in use are almost always a typo in
	// the driver, so they are errors rather than ignored.
	if p.WOL != nil && p.Driver != PowerDriverWOL {
		es.Add(path+".wol", "is set but the driver is %q (want driver: wol)", p.Driver)
	}
	if p.Webhook != nil && p.Driver != PowerDriverWebhook {
		es.Add(path+".webhook", "is set but the driver is %q (want driver: webhook)", p.Driver)
	}
	bmc := p.Driver == PowerDriverIPMI || p.Driver == PowerDriverRedfish
	if !bmc && len(e) == 0 {
		for _, f := range []struct{ name, v string }{{"address", p.Address}, {"username", p.Username}, {"password", p.Password}} {
			if f.v != "" {
				es.Add(path+"."+f.name, "is only used by the ipmi and redfish drivers")
			}
		}
		if p.PasswordSecret != nil {
			es.Add(path+".passwordSecret", "is only used by the ipmi and redfish drivers")
		}
	}
	if ref := p.PasswordSecret; ref != nil {
		es = append(es, ref.validate(path+".passwordSecret")...)
		if p.Password != "" {
			es.Add(path+".password", "is set beside passwordSecret; keep only passwordSecret")
		}
	}
	switch p.Driver {
	case PowerDriverIPMI:
		if p.Address == "" {
			es.Add(path+".address", "is required for driver ipmi (the BMC's host or host:port)")
		} else if strings.Contains(p.Address, "://") {
			es.Add(path+".address", "%q is a URL; ipmi wants the BMC's host or host:port", p.Address)
		}
	case PowerDriverRedfish:
		if p.Address == "" {
			es.Add(path+".address", "is required for driver redfish (the BMC's host or https URL)")
		} else if strings.Contains(p.Address, "://") {
			es = append(es, ValidateURL(path+".address", p.Address)...)
		}
	case PowerDriverWOL:
		if w := p.WOL; w != nil {
			_, e := ValidateIP(path+".wol.broadcast", w.Broadcast)
			es = append(es, e...)
			es = append(es, ValidatePort(path+".wol.port", w.Port)...)
		}
	case PowerDriverWebhook:
		w := p.Webhook
		if w == nil {
			es.Add(path+".webhook", "is required for driver webhook (at least onURL and offURL)")
			break
		}
		wp := path + ".webhook"
		es = append(es, ValidateURL(wp+".onURL", w.OnURL)...)
		es = append(es, ValidateURL(wp+".offURL", w.OffURL)...)
		es = append(es, ValidateOneOf(wp+".method", w.Method, http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch)...)
		if w.BodyTemplate != "" {
			es = append(es, ValidateTemplate(wp+".bodyTemplate", w.BodyTemplate)...)
		}
		for k := range w.Headers {
			if !headerName.MatchString(k) {
				es.Add(wp+".headers", "%q is not an HTTP header name", k)
			}
		}
		seen := map[string]bool{}
		for i, h := range w.SecretHeaders {
			hp := fmt.Sprintf("%s.secretHeaders[%d]", wp, i)
			switch {
			case !headerName.MatchString(h.Name):
				es.Add(hp+".name", "%q is not an HTTP header name", h.Name)
			case seen[http.CanonicalHeaderKey(h.Name)]:
				es.Add(hp+".name", "%q is given twice", h.Name)
			case hasHeader(w.Headers, h.Name):
				es.Add(hp+".name", "%q is also in headers; give it once", h.Name)
			}
			seen[http.CanonicalHeaderKey(h.Name)] = true
			if h.ValueFrom.SecretKeyRef == nil {
				es.Add(hp+".valueFrom.secretKeyRef", "is required (the Secret and key that hold the value)")
			} else {
				es = append(es, h.ValueFrom.SecretKeyRef.validate(hp+".valueFrom.secretKeyRef")...)
			}
		}
		if w.StatusURL != "" {
			es = append(es, ValidateURL(wp+".statusURL", w.StatusURL)...)
		}
		if w.StatusOnMatch != "" {
			if w.StatusURL == "" {
				es.Add(wp+".statusOnMatch", "is only used with statusURL")
			}
			if _, err := regexp.Compile(w.StatusOnMatch); err != nil {
				es.Add(wp+".statusOnMatch", "is not a regular expression: %v", err)
			}
		}
	}
	return es
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func hasHeader(h map[string]string, name string) bool {
	for k := range h {
		if http.CanonicalHeaderKey(k) == http.CanonicalHeaderKey(name) {
			return true
		}
	}
	return false
}

// credentialHeader matches header names that carry credentials, which
// belong in secretHeaders.
var credentialHeader = regexp.MustCompile(`(?i)auth|token|key|secret|pass|cookie|session|signature|credential`)

// ValidateCreate refuses credentials written into a new Machine: they
// would be stored in plain text.
func (s *MachineSpec) ValidateCreate(path string) FieldErrors {
	return s.inlineCredentials(path, nil)
}

func (s *MachineSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*MachineSpec)
	var es FieldErrors
	if s.MAC != o.MAC {
		es.Add(path+".mac", "cannot change (was %q): the MAC is how the machine is known at boot; delete the machine and let it be discovered again", o.MAC)
	}
	return append(es, s.inlineCredentials(path, o)...)
}

// inlineCredentials refuses a BMC password or a credential header written
// into the Machine, unless old (the stored spec, nil on a create) already
// had that very value: machines stored before Secrets existed keep
// working, but no new credential enters etcd in plain text.
func (s *MachineSpec) inlineCredentials(path string, old *MachineSpec) FieldErrors {
	var es FieldErrors
	p := s.Power
	if p.Password != "" && (old == nil || old.Power.Password != p.Password) {
		es.Add(path+".power.password", "a password written into the Machine is stored in plain text; put it in a Secret "+
			"(kind: Secret, spec.stringData: {password: …}) and refer to it with spec.power.passwordSecret: {name: SECRET, key: password}")
	}
	if w := p.Webhook; w != nil {
		var names []string
		for k := range w.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if !credentialHeader.MatchString(k) || w.Headers[k] == "" {
				continue
			}
			if old != nil && old.Power.Webhook != nil && old.Power.Webhook.Headers[k] == w.Headers[k] {
				continue
			}
			es.Add(path+".power.webhook.headers", "%q looks like a credential, and a value written into the Machine is stored in plain text; "+
				"put it in a Secret and list it under secretHeaders: [{name: %s, valueFrom: {secretKeyRef: {name: SECRET, key: KEY}}}]", k, k)
		}
	}
	return es
}

func init() {
	register[MachineSpec, MachineStatus](KindInfo{
		Kind: "Machine", Plural: "machines", ShortNames: []string{"machine", "bm"}, Scope: ClusterScoped,
		Description: "A bare-metal computer that Hearth discovers, network-boots, installs and powers on and off.",
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "MAC", Get: func(o Object) string { return o.(*Machine).Spec.MAC }},
			{Name: "ARCH", Get: func(o Object) string { return o.(*Machine).Spec.Architecture }},
			{Name: "PROFILE", Get: func(o Object) string {
				m := o.(*Machine)
				if m.Status.MatchedProfile != "" {
					return m.Status.MatchedProfile
				}
				return m.Spec.Profile
			}},
			{Name: "IP", Get: func(o Object) string {
				if a := o.(*Machine).Status.Addresses; len(a) > 0 {
					return a[0]
				}
				return ""
			}},
			{Name: "APPROVED", Wide: true, Get: func(o Object) string { return fmt.Sprint(o.(*Machine).Spec.Approved) }},
			{Name: "SITE", Wide: true, Get: func(o Object) string { return o.(*Machine).Spec.Site }},
			{Name: "POWER", Wide: true, Get: func(o Object) string {
				m := o.(*Machine)
				if m.Status.PowerState == "" {
					return m.Spec.Power.Driver
				}
				return m.Spec.Power.Driver + "/" + m.Status.PowerState
			}},
		},
	})
}
