package profile

import (
	"net/url"
	"slices"
	"sort"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/cloudinit"
)

// Values is what a profile's templates get, as the dot. Every field is
// documented, with examples, in docs/BOOT-TEMPLATES.md; change the two
// together.
type Values struct {
	Machine MachineValues
	Profile ProfileValues
	Site    SiteValues
	Server  ServerValues
	URLs    URLValues
	// SSHKeys are the public keys of the profile's tenant chosen by its
	// sshKeySelector, one authorized_keys line each, sorted by key name.
	SSHKeys []string
	// Token authenticates the machine's report (URLs.Report) as a bearer
	// token. It is a secret of one boot, good for one report: use it only
	// in the report call. The boot service leaves it empty where nothing
	// needs it.
	Token string
}

// MachineValues describe the machine being booted.
type MachineValues struct {
	Name string
	UID  string
	// MAC is the boot interface's MAC, lowercase with colons.
	MAC string
	// Arch is x86_64, arm64, or empty while unknown.
	Arch string
	// Hostname is spec.hostname, else the machine's name.
	Hostname string
	// UUID is the SMBIOS UUID the firmware sent (DHCP option 97).
	UUID string
	// Firmware is bios, uefi, or empty while unknown.
	Firmware string
	Site     string
	Labels   map[string]string
	// IPs are the machine's addresses as status.addresses holds them.
	IPs []string
}

// ProfileValues describe the profile being rendered.
type ProfileValues struct {
	Name string
	// Install is true for a profile that installs to disk, false for a
	// stateless one.
	Install bool
}

// SiteValues describe the machine's site (empty when it has none).
type SiteValues struct {
	Name string
	Tags []string
}

// ServerValues say where Hearth is reached from the machine.
type ServerValues struct {
	// BootURL is the boot service's HTTP base ("http://10.0.0.2:8080").
	BootURL string
	// APIURL is the Hearth API's base URL.
	APIURL string
}

// URLValues are the URLs the machine fetches or calls.
type URLValues struct {
	// Kernel and Initrds of the boot chosen for the machine's
	// architecture (empty for a boot by iPXE script).
	Kernel  string
	Initrds []string
	// Script is the machine's iPXE script: what it chains to.
	Script string
	// FilesBase is where the profile's rendered files live:
	// FilesBase + "/" + name is Files[name]. It, Files, Metadata and
	// Report are under the boot (Boot): they are served only within the
	// boot the service issued, to the machine's own address.
	FilesBase string
	// Files maps each of the profile's files to its URL.
	Files map[string]string
	// Metadata is a NoCloud meta-data document for the machine
	// (instance-id, local-hostname), in FilesBase, so "ds=nocloud;s=" +
	// FilesBase + "/" finds it beside a user-data file.
	Metadata string
	// Report is where the booted system or the installer reports back
	// (POST, with Token), once.
	Report string
	// Boot is the base of the boot's URLs
	// (BootURL/machines/NAME/boots/ID).
	Boot string
}

// Hostname is .Machine.Hostname, kept short for kernel args.
func (v Values) Hostname() string { return v.Machine.Hostname }

// FilesURL is .URLs.FilesBase, kept short for kernel args.
func (v Values) FilesURL() string { return v.URLs.FilesBase }

// The URL layout of the boot service's HTTP side, per machine. The boot
// service serves these paths; templates reach them through URLValues.
const (
	machinesPath = "/machines/"
	scriptName   = "boot.ipxe"
	bootsDir     = "boots"
	filesDir     = "files"
	reportName   = "report"
	// MetadataFile is the name of the generated NoCloud meta-data, served
	// unless the profile has a file of that name.
	MetadataFile = "meta-data"
)

// MachineURL is the base of one machine's URLs under bootURL.
func MachineURL(bootURL, machine string) string {
	return strings.TrimRight(bootURL, "/") + machinesPath + url.PathEscape(machine)
}

// BootURL is the base of the URLs of one boot of a machine: the boot
// service issues a boot (a random id) when it serves the machine its
// profile's boot, and serves the boot's files, artifacts and report
// under this base only.
func BootURL(bootURL, machine, boot string) string {
	return MachineURL(bootURL, machine) + "/" + bootsDir + "/" + url.PathEscape(boot)
}

// NewValues gathers the values for machine m booting profile p (nil while
// it has none) at site (nil when it has none or it is unknown), in the
// boot with id boot ("" while none is issued: the files and report URLs
// then name no boot, and nothing serves them). URLs.Kernel and Initrds
// are filled by RenderBoot for the architecture's boot; SSHKeys and Token
// are the caller's to set.
func NewValues(m *api.Machine, p *api.MachineProfile, site *api.Site, srv ServerValues, boot string) Values {
	v := Values{
		Machine: MachineValues{
			Name: m.Metadata.Name, UID: m.Metadata.UID, MAC: m.Spec.MAC, Arch: m.Spec.Architecture,
			Hostname: m.Spec.Hostname, UUID: m.Status.UUID, Firmware: m.Status.Firmware, Site: m.Spec.Site,
			Labels: map[string]string{}, IPs: slices.Clone(m.Status.Addresses),
		},
		Server: srv,
	}
	if v.Machine.Hostname == "" {
		v.Machine.Hostname = m.Metadata.Name
	}
	for k, l := range m.Metadata.Labels {
		v.Machine.Labels[k] = l
	}
	if site != nil {
		v.Site = SiteValues{Name: site.Metadata.Name, Tags: slices.Clone(site.Spec.Tags)}
	} else if m.Spec.Site != "" {
		v.Site.Name = m.Spec.Site
	}
	base := BootURL(srv.BootURL, m.Metadata.Name, boot)
	v.URLs = URLValues{
		Script:    MachineURL(srv.BootURL, m.Metadata.Name) + "/" + scriptName,
		Boot:      base,
		FilesBase: base + "/" + filesDir,
		Report:    base + "/" + reportName,
		Files:     map[string]string{},
	}
	v.URLs.Metadata = v.URLs.FilesBase + "/" + MetadataFile
	if p != nil {
		v.Profile = ProfileValues{Name: p.Metadata.Name, Install: p.Spec.Install}
		for _, f := range p.Spec.Files {
			v.URLs.Files[f.Name] = v.URLs.FilesBase + "/" + url.PathEscape(f.Name)
		}
	}
	return v
}

// SelectSSHKeys returns the public keys profile p hands its machines: the
// keys of p's tenant matching its sshKeySelector, sorted by name. keys may
// hold any tenant's keys; the others are ignored.
func SelectSSHKeys(p *api.MachineProfile, keys []*api.SSHKey) []string {
	if p == nil || p.Spec.Tenant == "" {
		return nil
	}
	var picked []*api.SSHKey
	for _, k := range keys {
		if k.Metadata.Tenant == p.Spec.Tenant && k.Metadata.DeletionTimestamp == nil && p.Spec.SSHKeySelector.Matches(k.Metadata.Labels) {
			picked = append(picked, k)
		}
	}
	sort.Slice(picked, func(i, j int) bool { return picked[i].Metadata.Name < picked[j].Metadata.Name })
	out := make([]string, len(picked))
	for i, k := range picked {
		out[i] = k.Spec.PublicKey
	}
	return out
}

// MetaData renders the NoCloud meta-data the boot service serves at
// URLs.Metadata when the profile has no file of that name: the machine's
// instance-id (its uid) and local-hostname, written by cloudinit as a
// VM's seed is, so nothing in the values can add keys.
func MetaData(v Values) string {
	id := v.Machine.UID
	if id == "" {
		id = v.Machine.Name
	}
	return string(cloudinit.Seed{InstanceID: id, Hostname: v.Machine.Hostname}.MetaData())
}
