// Package profile decides how a bare-metal Machine boots: which
// MachineProfile it gets, whether it may boot it yet, and what its
// templates render to. It is pure (no I/O, no clock), so the server's
// machine controller and the boot service, which both need these answers,
// reach the same ones.
//
// # Matching
//
// Match picks a machine's profile. A machine that names a profile in
// spec.profile gets that one, whatever the selectors say; it is an error
// if the profile does not exist. Otherwise every profile whose selector
// matches the machine (api.MachineSelector.Matches), that is not being
// deleted, and that can boot the machine's architecture (a variant for it
// or a default boot; not checked while the architecture is unknown) is a
// candidate, and the most specific candidate wins:
//
//	specificity = 100 if the selector lists MACs
//	            + 10 × the number of label requirements (counted up to 9)
//	            + 1 if it lists architectures
//	            + 1 if it lists sites
//
// Read it as digits: hundreds say the machine is named by MAC, tens how
// many labels it must carry, units whether architecture and site narrow it
// further. So a MAC beats any labels, one more label beats any
// architecture and site, and an empty selector (a catch-all) has 0.
// Between equally specific candidates the higher spec.priority wins. Two
// or more candidates equal in both are a conflict, never settled by name:
//
//	machine node1 matches profiles a and b equally (specificity 2, priority 0): make one more specific or set priority
//
// # Approval and what a boot does
//
// A machine may boot its profile once it is approved: spec.approved, or
// the profile's autoApprove (Approved). Next says what its next network
// boot does: wait (not approved, or no profile: an iPXE script that says
// why and asks again after a pause), boot the profile, or boot the local
// disk (an install profile whose installer has reported success, status
// installedAt, and no reinstall requested since: spec.reinstallRequested
// after installedAt).
//
// # Templates
//
// The kernel args, the iPXE script and the files of a profile are Go
// text/template templates rendered with Values; docs/BOOT-TEMPLATES.md
// lists every value and function with examples. Missing map keys
// (.Machine.Labels.rack on a machine without that label) render empty, a
// misspelt field is an error, and output is capped at MaxOutput bytes.
//
// Values come partly from outside Hearth's control: the machine's status
// (UUID, addresses) is what its firmware and DHCP client said. So in the
// kernel args and in an iPXE script, where a newline starts a new iPXE
// command and a space a new kernel argument, the text every template
// action prints must be one safe boot word (CheckWord): printable, no
// whitespace, no backslash or double quote, no ';' or '|', no "&&" and
// no '&' at either end, no "${" and no leading '#'. A value that is not is
// refused with an UnsafeValueError naming the action, rather than escaped:
// iPXE has no quoting, so there is no escaping that keeps its meaning. The
// template's own text is the profile author's and is not restricted.
// Files (cloud-init, kickstart, preseed) are data for the installer and
// may hold anything; use quote, squote or toYAML when a value goes into
// YAML or shell there.
package profile
