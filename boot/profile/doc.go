// Package profile decides what a bare-metal Machine's next network boot
// does and what its profile's templates render to, for the boot service.
// It is pure (no I/O, no clock).
//
// # Matching
//
// Which profile a machine boots is api.MatchProfile: spec.profile if it
// names one, else the most specific matching selector, then the highest
// priority; a tie is an error, never settled by name. It lives in the API
// package with the other lifecycle predicates (api.MachineMayBoot,
// api.MachineInstallDone, api.MachineReinstallPending), because the
// server's machine controller needs the same answers and does not import
// the boot service.
//
// # Approval and what a boot does
//
// A machine may boot its profile once it is approved: spec.approved, or
// the profile's autoApprove (api.MachineMayBoot). Next says what its next
// network boot does: wait (not approved, or no profile: an iPXE script that says
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
