// Package power switches bare-metal machines on and off. Each way a
// machine's power can be controlled (Wake-on-LAN, IPMI, Redfish, an HTTP
// webhook for smart plugs) is a Driver; For picks the one a Machine's
// spec.power asks for. Drivers hold no state between calls, so building
// one per action is cheap and always uses the machine's current settings.
package power

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// State is a machine's power state as its driver reads it.
type State string

const (
	On      State = "on"
	Off     State = "off"
	Unknown State = "unknown"
)

// API returns the state in the spelling of the Machine's
// status.powerState (On, Off, Unknown).
func (s State) API() string {
	switch s {
	case On:
		return api.MachinePowerOn
	case Off:
		return api.MachinePowerOff
	}
	return api.MachinePowerUnknown
}

// Driver controls one machine's power. Every method talks to the machine's
// BMC, plug or network when called and honours ctx's deadline; none keeps
// state between calls.
type Driver interface {
	// On turns the machine on. Turning on a machine that is already on
	// is not an error.
	On(ctx context.Context) error
	// Off cuts the power at once, the way holding the button does: the
	// operating system is not asked to shut down first.
	Off(ctx context.Context) error
	// Cycle turns the machine off and on again. A machine that is off is
	// just turned on, since BMCs refuse to cycle it.
	Cycle(ctx context.Context) error
	// Status reads whether the machine is on. Drivers that cannot tell
	// return Unknown and ErrUnsupported.
	Status(ctx context.Context) (State, error)
	// BootOnceFromNetwork makes the next boot, and only that one, a
	// network boot (IPMI: chassis bootdev pxe; Redfish:
	// BootSourceOverrideTarget Pxe, Once). It does not reboot the machine:
	// follow it with On or Cycle. Drivers that cannot choose the boot
	// device return ErrUnsupported.
	BootOnceFromNetwork(ctx context.Context) error
}

// ErrUnsupported is returned for an action a driver cannot do: Wake-on-LAN
// cannot turn a machine off, a smart plug cannot choose the boot device.
var ErrUnsupported = errors.New("not supported by this power driver")

// ErrNoDriver is returned by For for a machine whose spec.power.driver is
// none: a person presses its button.
var ErrNoDriver = errors.New("the machine has no power driver")

// Options are the settings a driver needs that are not in the Machine:
// they depend on where the driver runs.
type Options struct {
	// Interface is the network interface Wake-on-LAN packets leave from,
	// such as the boot service's provisioning interface. Empty lets the
	// routing table choose, which for 255.255.255.255 is the interface of
	// the default route: usually not the provisioning network.
	Interface string
	// IPMITool is the ipmitool program (default "ipmitool" from PATH).
	IPMITool string
	// CycleDelay is how long a driver that cycles by switching off and on
	// (webhook) waits in between, so power supplies really drain (default
	// 5s).
	CycleDelay time.Duration
	// HTTPTimeout bounds each Redfish or webhook request when ctx has no
	// earlier deadline (default 30s).
	HTTPTimeout time.Duration
}

const (
	defaultCycleDelay  = 5 * time.Second
	defaultHTTPTimeout = 30 * time.Second
)

// For returns the driver m's spec.power asks for, once ResolveSecrets has
// filled in the values its Secrets hold. The settings are checked
// first (with the API's own defaults and validation, so an object made by
// hand gets the same answers as one from the server), and errors name the
// field to fix.
func For(m *api.Machine, o Options) (Driver, error) {
	if o.CycleDelay <= 0 {
		o.CycleDelay = defaultCycleDelay
	}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = defaultHTTPTimeout
	}
	spec := m.Spec
	p := &spec.Power
	// Default fills in the WOL and Webhook structs, which m shares with
	// spec: copy them so m is left as it was.
	if p.WOL != nil {
		w := *p.WOL
		p.WOL = &w
	}
	if p.Webhook != nil {
		w := *p.Webhook
		p.Webhook = &w
	}
	spec.Default()
	name := m.Metadata.Name
	if p.PasswordSecret != nil || (p.Webhook != nil && len(p.Webhook.SecretHeaders) > 0) {
		return nil, fmt.Errorf("machine %s: spec.power refers to Secrets; read them first (power.ResolveSecrets)", name)
	}
	if err := spec.Validate("spec").Err(); err != nil {
		return nil, fmt.Errorf("machine %s: %w", name, err)
	}
	switch p.Driver {
	case api.PowerDriverNone:
		return nil, fmt.Errorf("machine %s: spec.power.driver is none, so Hearth cannot switch it: press its power button, or set spec.power.driver to wol, ipmi, redfish or webhook: %w", name, ErrNoDriver)
	case api.PowerDriverWOL:
		return newWOL(name, spec.MAC, p.WOL, o)
	case api.PowerDriverIPMI:
		return newIPMI(m, p, o)
	case api.PowerDriverRedfish:
		return newRedfish(m, p, o)
	case api.PowerDriverWebhook:
		return newWebhook(m, p.Webhook, o)
	}
	// Validate knows every driver, so this is a driver added to the API
	// but not here.
	return nil, fmt.Errorf("machine %s: spec.power.driver %q is not known to this version of Hearth", name, p.Driver)
}

// splitHostPort splits a BMC address given as host, host:port, [v6]:port
// or a bare IPv6 address, using defaultPort when there is none.
func splitHostPort(field, addr string, defaultPort int) (string, int, error) {
	if ip := net.ParseIP(strings.Trim(addr, "[]")); ip != nil {
		return ip.String(), defaultPort, nil
	}
	if !strings.Contains(addr, ":") {
		return addr, defaultPort, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %q is not host or host:port: %w", field, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%s: %q: the port is not a number from 1 to 65535", field, addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%s: %q has no host", field, addr)
	}
	return host, port, nil
}

// withTimeout bounds ctx by d unless it already ends sooner.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// bodySnippet is the start of an HTTP answer, for error messages.
func bodySnippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// statusError describes an HTTP answer that was not a success.
func statusError(resp *http.Response, body []byte) string {
	if s := bodySnippet(body); s != "" {
		return resp.Status + ": " + s
	}
	return resp.Status
}
