package v1alpha1

import (
	"fmt"
	"mime"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// MachineProfile is how a kind of machine boots: a kernel, initrds and
// arguments, or an iPXE script, per architecture, with templated files
// (cloud-init, kickstart, preseed, autoinstall, ignition) rendered for each
// machine. Machines pick a profile by name (spec.profile) or by the
// profiles' selectors: among matching profiles the most specific selector
// wins (MACs, then labels, then architectures and sites), then the higher
// priority; a tie is an error shown on the machine (see MatchProfile).
type MachineProfile = Resource[MachineProfileSpec, MachineProfileStatus]

type MachineProfileSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Selector picks the machines the profile applies to. An empty selector
	// matches every machine: a catch-all profile, usually with a low
	// priority.
	Selector MachineSelector `json:"selector,omitempty"`
	// Priority breaks ties between equally specific profiles; higher wins.
	Priority int `json:"priority,omitempty"`
	// AutoApprove approves machines matched to this profile, so they boot
	// it without a person approving each one. Leave it off for profiles that
	// wipe disks unless the provisioning network is trusted.
	AutoApprove bool `json:"autoApprove,omitempty"`
	// Install says the profile installs an operating system: the machine
	// boots it once, reports success, and boots from its disk afterwards.
	// Without it the machine is stateless and boots the profile (a RAM
	// root) every time.
	Install bool `json:"install,omitempty"`
	// The default boot, used for architectures without a variant.
	ProfileBoot `json:",inline"`
	// Variants replace the default boot for one architecture (x86_64,
	// arm64). A variant replaces the whole boot: fields it leaves empty
	// are not taken from the default.
	Variants map[string]ProfileBoot `json:"variants,omitempty"`
	// Files are rendered for each machine and served by Hearth's boot HTTP
	// service; the kernel args and iPXE script reach them through their
	// template data.
	Files []ProfileFile `json:"files,omitempty"`
	// Tenant whose SSHKeys are handed to the machines (in the templates'
	// data), chosen by SSHKeySelector; empty gives none.
	Tenant string `json:"tenant,omitempty"`
	// SSHKeySelector picks the tenant's SSHKeys by label; empty picks all
	// of them.
	SSHKeySelector LabelSelector `json:"sshKeySelector,omitempty"`
}

// MachineSelector picks machines. Every field that is set must match; a
// list matches when the machine's value is in it.
type MachineSelector struct {
	// Labels the machine must carry (metadata.labels).
	Labels LabelSelector `json:"labels,omitempty"`
	// MACs name machines one by one.
	MACs []string `json:"macs,omitempty"`
	// Architectures the machine's spec.architecture must be one of.
	Architectures []string `json:"architectures,omitempty"`
	// Sites the machine's spec.site must be one of.
	Sites []string `json:"sites,omitempty"`
}

// ProfileBoot is one way to boot: a kernel with initrds and arguments, or
// an iPXE script. Exactly one of Kernel and IPXEScript is set.
type ProfileBoot struct {
	// Kernel the machine boots, and the Initrds loaded beside it, in
	// order.
	Kernel  *BootFile  `json:"kernel,omitempty"`
	Initrds []BootFile `json:"initrds,omitempty"` // see Kernel
	// Args is the kernel command line, a Go template rendered per machine.
	Args string `json:"args,omitempty"`
	// IPXEScript is a Go template rendered per machine into an iPXE script,
	// for boots a kernel line cannot express (chaining, sanboot, menus).
	// Hearth adds the #!ipxe line if it is missing.
	IPXEScript string `json:"ipxeScript,omitempty"`
}

// IsZero reports whether nothing of the boot is set.
func (b *ProfileBoot) IsZero() bool {
	return b.Kernel == nil && len(b.Initrds) == 0 && b.Args == "" && b.IPXEScript == ""
}

// BootFile is a kernel or an initrd: fetched from a URL, or, for a
// VirtualMachine, taken from an Image. Exactly one of URL and Image is set.
type BootFile struct {
	// URL is where the file comes from: http(s), or, in a MachineProfile
	// only, file:///path under a directory the boot service allows
	// (`hearth boot --allow-file-dir`).
	URL string `json:"url,omitempty"`
	// Image names an Image holding the file (a VirtualMachine's kernel
	// and initrd only): the VM tenant's own image of that name, else a
	// shared one, as for disks. The host fetches it into its image cache
	// like any image, so a shared Image with a file:// URL is how an
	// administrator hands VMs a kernel that lives on the hosts.
	Image string `json:"image,omitempty"`
	// Checksum ("sha256:…"), when set, is verified before the file is
	// served or used, and lets it be cached safely. With Image, the
	// Image's checksum is used instead.
	Checksum string `json:"checksum,omitempty"`
}

// ProfileFile is a file rendered from a template for each machine.
type ProfileFile struct {
	// Name is the file name in the machine's URL space ("user-data",
	// "ks.cfg"): no '/' and no "..".
	Name string `json:"name"`
	// Template is a Go template; it gets the machine, the profile and the
	// selected SSH keys.
	Template string `json:"template"`
	// ContentType is served with the file (default text/plain; charset=utf-8).
	ContentType string `json:"contentType,omitempty"`
}

type MachineProfileStatus struct {
	CommonStatus `json:",inline"`
	// Machines counts the machines that boot this profile.
	Machines int `json:"machines,omitempty"`
}

// BootFor returns the boot for a machine of architecture arch: its variant
// if there is one, else the default. ok is false when neither can boot it.
func (s *MachineProfileSpec) BootFor(arch string) (b ProfileBoot, ok bool) {
	if v, found := s.Variants[NormalizeArch(arch)]; found {
		return v, true
	}
	return s.ProfileBoot, !s.ProfileBoot.IsZero()
}

// Matches reports whether the selector picks m.
func (sel MachineSelector) Matches(m *Machine) bool {
	in := func(list []string, v string) bool {
		if len(list) == 0 {
			return true
		}
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	}
	return sel.Labels.Matches(m.Metadata.Labels) &&
		in(sel.MACs, m.Spec.MAC) &&
		in(sel.Architectures, m.Spec.Architecture) &&
		in(sel.Sites, m.Spec.Site)
}

func (s *MachineProfileSpec) Default() {
	for i, m := range s.Selector.MACs {
		s.Selector.MACs[i] = strings.ToLower(strings.TrimSpace(m))
	}
	for i, a := range s.Selector.Architectures {
		s.Selector.Architectures[i] = NormalizeArch(a)
	}
	if len(s.Variants) > 0 {
		// Keys are normalised too, so "amd64:" and "x86_64:" mean the same.
		vs := make(map[string]ProfileBoot, len(s.Variants))
		for k, v := range s.Variants {
			if n := NormalizeArch(k); n != k {
				if _, dup := s.Variants[n]; dup {
					vs[k] = v // Validate reports it as a duplicate.
					continue
				}
				k = n
			}
			vs[k] = v
		}
		s.Variants = vs
	}
	for i := range s.Files {
		if s.Files[i].ContentType == "" {
			s.Files[i].ContentType = "text/plain; charset=utf-8"
		}
	}
}

func (s *MachineProfileSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	sp := path + ".selector"
	es = append(es, ValidateLabels(sp+".labels", s.Selector.Labels)...)
	for i, m := range s.Selector.MACs {
		_, e := ValidateMAC(fmt.Sprintf("%s.macs[%d]", sp, i), m)
		es = append(es, e...)
	}
	for i, a := range s.Selector.Architectures {
		es = append(es, ValidateArch(fmt.Sprintf("%s.architectures[%d]", sp, i), a)...)
	}
	for i, site := range s.Selector.Sites {
		es = append(es, ValidateName(fmt.Sprintf("%s.sites[%d]", sp, i), site)...)
	}

	if s.ProfileBoot.IsZero() {
		if len(s.Variants) == 0 {
			es.Add(path+".kernel", "is required: set kernel or ipxeScript, or give a boot per architecture in variants")
		}
	} else {
		es = append(es, s.ProfileBoot.validate(path)...)
	}
	keys := make([]string, 0, len(s.Variants))
	for k := range s.Variants {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vp := path + ".variants." + k
		if NormalizeArch(k) != k {
			es.Add(vp, "%q is also given as %q", k, NormalizeArch(k))
		} else if e := ValidateArch(vp, k); len(e) > 0 {
			es = append(es, e...)
			continue
		}
		v := s.Variants[k]
		es = append(es, v.validate(vp)...)
	}

	names := map[string]int{}
	for i, f := range s.Files {
		fp := fmt.Sprintf("%s.files[%d]", path, i)
		switch {
		case f.Name == "":
			es.Add(fp+".name", "is required")
		case strings.Contains(f.Name, "/"):
			es.Add(fp+".name", "%q contains '/'; file names are flat", f.Name)
		case strings.Contains(f.Name, ".."):
			es.Add(fp+".name", "%q contains \"..\"", f.Name)
		case !fileName.MatchString(f.Name):
			es.Add(fp+".name", "%q must be letters, digits, '.', '_' and '-', starting with a letter or digit", f.Name)
		}
		if j, dup := names[f.Name]; dup && f.Name != "" {
			es.Add(fp+".name", "%q is already used by files[%d]", f.Name, j)
		} else {
			names[f.Name] = i
		}
		es = append(es, ValidateTemplate(fp+".template", f.Template)...)
		if _, _, err := mime.ParseMediaType(f.ContentType); err != nil {
			es.Add(fp+".contentType", "%q is not a media type (such as text/plain or application/json)", f.ContentType)
		}
	}

	if s.Tenant != "" {
		es = append(es, ValidateName(path+".tenant", s.Tenant)...)
	} else if len(s.SSHKeySelector) > 0 {
		es.Add(path+".tenant", "is required with sshKeySelector: SSH keys belong to a tenant")
	}
	es = append(es, ValidateLabels(path+".sshKeySelector", s.SSHKeySelector)...)
	return es
}

var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// validate checks one boot: exactly one of kernel and ipxeScript, with
// initrds and args only beside a kernel.
func (b *ProfileBoot) validate(path string) FieldErrors {
	var es FieldErrors
	switch {
	case b.Kernel != nil && b.IPXEScript != "":
		es.Add(path+".ipxeScript", "cannot be set with kernel: the script says what to boot")
	case b.Kernel == nil && b.IPXEScript == "":
		es.Add(path+".kernel", "is required: set kernel or ipxeScript")
	}
	if b.Kernel != nil {
		es = append(es, b.Kernel.validate(path+".kernel")...)
	}
	if b.IPXEScript != "" {
		es = append(es, ValidateTemplate(path+".ipxeScript", b.IPXEScript)...)
	}
	if b.IPXEScript != "" && b.Kernel == nil {
		if len(b.Initrds) > 0 {
			es.Add(path+".initrds", "are only used with kernel; load them in the iPXE script")
		}
		if b.Args != "" {
			es.Add(path+".args", "is only used with kernel; put arguments in the iPXE script")
		}
	}
	for i := range b.Initrds {
		es = append(es, b.Initrds[i].validate(fmt.Sprintf("%s.initrds[%d]", path, i))...)
	}
	if b.Args != "" {
		es = append(es, ValidateTemplate(path+".args", b.Args)...)
	}
	return es
}

// validate checks a profile's boot file: a URL (http, https or file),
// since the boot service serves profiles' files by URL only.
func (f *BootFile) validate(path string) FieldErrors {
	var es FieldErrors
	if f.Image != "" {
		es.Add(path+".image", "is only for VirtualMachines; a profile's kernel and initrds are given by url")
	}
	es = append(es, ValidateArtifactURL(path+".url", f.URL)...)
	if f.Checksum != "" {
		es = append(es, ValidateChecksum(path+".checksum", f.Checksum)...)
	}
	return es
}

// validateVM checks a VirtualMachine's kernel or initrd: exactly one of
// an http(s) URL and an Image. file:// is refused whoever writes it: VMs
// belong to tenants, and a file on the host is not theirs to boot (an
// administrator offers one as a shared Image instead).
func (f *BootFile) validateVM(path string) FieldErrors {
	var es FieldErrors
	switch {
	case f.URL != "" && f.Image != "":
		es.Add(path+".image", "cannot be set with url: a boot file comes from a URL or from an Image, not both")
	case f.URL == "" && f.Image == "":
		es.Add(path+".url", "is required (or set image to boot a file held by an Image)")
	case f.Image != "":
		es = append(es, ValidateName(path+".image", f.Image)...)
		if f.Checksum != "" {
			es.Add(path+".checksum", "is only used with url; the Image's own checksum applies to an image")
		}
	default:
		if u, err := url.Parse(f.URL); err == nil && u.Scheme == "file" {
			es.Add(path+".url", "%q: a VirtualMachine cannot boot a file of its host; ask an administrator for a shared Image of it and name that in %s.image", f.URL, path)
		} else {
			es = append(es, ValidateURL(path+".url", f.URL)...)
		}
	}
	if f.Checksum != "" && f.Image == "" {
		es = append(es, ValidateChecksum(path+".checksum", f.Checksum)...)
	}
	return es
}

func init() {
	register[MachineProfileSpec, MachineProfileStatus](KindInfo{
		Kind: "MachineProfile", Plural: "machineprofiles", ShortNames: []string{"machineprofile", "mp", "profile"}, Scope: ClusterScoped,
		Description: "How matching bare-metal machines boot: kernel and initrds or an iPXE script per architecture, with templated install files.",
		Columns: []Column{
			{Name: "PRIORITY", Get: func(o Object) string { return strconv.Itoa(o.(*MachineProfile).Spec.Priority) }},
			{Name: "MODE", Get: func(o Object) string {
				if o.(*MachineProfile).Spec.Install {
					return "install"
				}
				return "stateless"
			}},
			{Name: "AUTO-APPROVE", Get: func(o Object) string { return strconv.FormatBool(o.(*MachineProfile).Spec.AutoApprove) }},
			{Name: "MACHINES", Get: func(o Object) string { return strconv.Itoa(o.(*MachineProfile).Status.Machines) }},
			{Name: "VARIANTS", Wide: true, Get: func(o Object) string {
				vs := o.(*MachineProfile).Spec.Variants
				keys := make([]string, 0, len(vs))
				for k := range vs {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				return strings.Join(keys, ",")
			}},
			{Name: "SELECTOR", Wide: true, Get: func(o Object) string { return o.(*MachineProfile).Spec.Selector.String() }},
		},
	})
}

// String writes the selector compactly for tables.
func (sel MachineSelector) String() string {
	var parts []string
	if len(sel.Labels) > 0 {
		parts = append(parts, sel.Labels.String())
	}
	for _, f := range []struct {
		name string
		v    []string
	}{{"mac", sel.MACs}, {"arch", sel.Architectures}, {"site", sel.Sites}} {
		if len(f.v) > 0 {
			parts = append(parts, f.name+" in ("+strings.Join(f.v, ",")+")")
		}
	}
	return strings.Join(parts, ",")
}
