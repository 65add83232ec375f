package admission

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// URLs checks the URLs that make hosts and the boot service fetch
// something (images, and the kernels and initrds of VMs and
// MachineProfiles), before they are written:
//
//   - file:// names a file on the machine that fetches it, so only cluster
//     admins' objects may use it: MachineProfiles and shared Images (no
//     tenant; only cluster admins make them). A tenant's Image is refused
//     whoever writes it, and a VM's boot files are refused by the API's
//     own validation. The agents and the boot service read such files
//     only under the directories they allow, and check again.
//   - An http(s) URL may not point at the API server (its listen and
//     advertised addresses, its certificate's names, its etcd), nor at an
//     address api.FetchAddrRefusal refuses (loopback, unspecified,
//     link-local, metadata), nor at a name for this host ("localhost"):
//     an agent asked to fetch from there would reach what it, not the
//     tenant, may reach. The agents' downloads refuse such addresses
//     again after DNS and redirects (storage.NewFetchClient), which a
//     look at the URL alone cannot see.
//
// Only URLs a write adds or changes are checked, so an object written
// before a rule existed can still be labelled or deleted.
type URLs struct {
	names map[string]bool
	addrs map[netip.Addr]bool
}

// NewURLs returns the URL check of a server known by these names and
// addresses (host names, IPs, or URLs whose host is taken).
func NewURLs(own []string) *URLs {
	u := &URLs{names: map[string]bool{}, addrs: map[netip.Addr]bool{}}
	for _, o := range own {
		host := o
		if pu, err := url.Parse(o); err == nil && pu.Host != "" {
			host = pu.Hostname()
		}
		host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
		if host == "" {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if !a.IsUnspecified() {
				u.addrs[a.Unmap()] = true
			}
			continue
		}
		u.names[host] = true
	}
	return u
}

// fetchURL is one URL of an object that something fetches, at its field
// path.
type fetchURL struct{ path, url string }

// fetchURLs returns the URLs of obj that hosts or the boot service fetch,
// and whether file:// is acceptable in them at all (cluster admins'
// kinds: MachineProfiles and shared Images).
func fetchURLs(obj api.Object) (urls []fetchURL, fileKind bool) {
	add := func(path string, f *api.BootFile) {
		if f != nil && f.URL != "" {
			urls = append(urls, fetchURL{path + ".url", f.URL})
		}
	}
	vmBoot := func(path string, b api.VMBoot) {
		add(path+".kernel", b.Kernel)
		add(path+".initrd", b.Initrd)
	}
	profileBoot := func(path string, b api.ProfileBoot) {
		add(path+".kernel", b.Kernel)
		for i := range b.Initrds {
			add(fmt.Sprintf("%s.initrds[%d]", path, i), &b.Initrds[i])
		}
	}
	switch o := obj.(type) {
	case *api.Image:
		if o.Spec.Source.URL != "" {
			urls = append(urls, fetchURL{"spec.source.url", o.Spec.Source.URL})
		}
		return urls, o.Metadata.Tenant == ""
	case *api.MachineProfile:
		profileBoot("spec", o.Spec.ProfileBoot)
		arches := make([]string, 0, len(o.Spec.Variants))
		for a := range o.Spec.Variants {
			arches = append(arches, a)
		}
		sort.Strings(arches)
		for _, a := range arches {
			profileBoot("spec.variants."+a, o.Spec.Variants[a])
		}
		return urls, true
	case *api.VirtualMachine:
		vmBoot("spec.boot", o.Spec.Boot)
	case *api.VirtualMachineSet:
		vmBoot("spec.template.spec.boot", o.Spec.Template.Spec.Boot)
	}
	return urls, false
}

// Admit refuses a write that adds a URL the rules above forbid, with an
// Invalid error naming each field.
func (u *URLs) Admit(_ context.Context, p *auth.Principal, obj, old api.Object) error {
	urls, fileKind := fetchURLs(obj)
	if len(urls) == 0 {
		return nil
	}
	had := map[fetchURL]bool{}
	if old != nil {
		prev, _ := fetchURLs(old)
		for _, f := range prev {
			had[f] = true
		}
	}
	fileOK := fileKind && p != nil && !p.HostCredential() && p.Role == api.RoleClusterAdmin
	var es api.FieldErrors
	for _, f := range urls {
		if had[f] {
			continue
		}
		pu, err := url.Parse(f.url)
		if err != nil {
			continue // validation has said so
		}
		switch pu.Scheme {
		case "file":
			if !fileOK {
				es.Add(f.path, "%q names a file on the hosts: only cluster admins' objects (shared Images, MachineProfiles) may; upload the image (hearth image upload) or serve it over http(s)", f.url)
			}
		case "http", "https":
			if why := u.refusal(pu.Hostname()); why != "" {
				es.Add(f.path, "%q %s: hosts fetch images only from servers of the lab, not from the machine they run on or the control plane", f.url, why)
			}
		}
	}
	if len(es) > 0 {
		return api.NewInvalid(obj.GetTypeMeta().Kind, obj.GetMetadata().Name, es)
	}
	return nil
}

// numericHost matches host names a resolver may read as an IPv4 address
// in one of inet_aton's forms (127.1, 2130706433, 0x7f.0.0.1): no real
// name ends in a numeric label or has a hex one.
var numericHost = regexp.MustCompile(`(^|\.)[0-9]+$|(^|\.)0x[0-9a-f]*(\.|$)`)

// refusal says why the host of a URL may not be fetched from, or "".
func (u *URLs) refusal(host string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if why := api.FetchAddrRefusal(a); why != "" {
			return "points at " + a.String() + ", which " + why
		}
		if u.addrs[a] {
			return "points at the API server (" + a.String() + " is its address)"
		}
		return ""
	}
	switch {
	case host == "":
		return "has no host"
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return "points at this host (" + host + ")"
	case u.names[host]:
		return "points at the API server (" + host + " is its name)"
	case numericHost.MatchString(host):
		return "has a host (" + host + ") that is neither a name nor an IP address"
	}
	return ""
}
