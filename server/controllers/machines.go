package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// The Machine conditions the machine controller owns.
const (
	// ConditionProfileMatched: True with the profile the machine boots,
	// False with why it has none (no match, a tie, a missing spec.profile).
	ConditionProfileMatched = api.ConditionProfileMatched
	// ConditionApproved: True once the machine may boot its profile (by
	// hand or by the profile's autoApprove).
	ConditionApproved = api.ConditionApproved
	// ConditionInstalled: for machines of an install profile, whether the
	// installer has reported success (and no reinstall was asked since).
	ConditionInstalled = api.ConditionInstalled
	// ConditionReported: whether the system a machine booted from its
	// profile has reported back to the boot service, which Ready (a
	// stateless profile's SSH host keys) and Installed (an installer's
	// success) wait for; False with reason ReasonWaitingForReport while
	// it is Provisioning. Absent until it boots its profile.
	ConditionReported = api.ConditionReported
	// ReasonWaitingForReport: booted, no report yet.
	ReasonWaitingForReport = api.ReasonWaitingForReport
)

// Machines moves bare-metal Machines through their lifecycle, from what
// the API says and what the boot service reported (status.lastBoot,
// installedAt, sshHostKeys). For every machine it writes:
//
//   - status.matchedProfile and ProfileMatched, from api.MatchProfile over
//     every MachineProfile;
//   - Approved: spec.approved or the profile's autoApprove;
//   - status.phase:
//     Discovered while it has no profile or is not approved;
//     Approved once approved, until it boots the profile after approval
//     (status.lastBoot after the Approved condition turned True, or after
//     spec.reinstallRequested when a reinstall is pending);
//     for an install profile, Provisioning from that boot until the
//     installer reports (status.installedAt), then Installed, and back
//     to Approved and Provisioning when spec.reinstallRequested is newer
//     than installedAt;
//     for a stateless profile, Provisioning from each boot until the
//     booted system reports its SSH host keys, then Ready. (The boot
//     service clears status.sshHostKeys when it serves a stateless boot:
//     a RAM root makes new host keys every time.)
//   - Reported: False (WaitingForReport, saying what the report takes)
//     while Provisioning, True once Ready or Installed.
//
// It also forgets machines nobody wants: a machine waiting in phase
// Discovered that carries nothing a person gave it (discovered, never
// approved, no profile, labels, annotations, hostname, description,
// power settings or other spec change since it was created) and that the
// boot service has not heard from (status.lastSeen, else its creation)
// for DiscoveredTTL is deleted, with a DiscoveredExpired event. The boot
// service bounds how many wait (its --max-discovered); this keeps the
// ones that went away from holding those places for ever. It discovers
// them again if they network-boot.
//
// It also keeps every MachineProfile's status.machines. Each change of
// condition or phase is recorded as an Event on the machine (its boot
// timeline). It is level-triggered: the status it writes depends only on
// the objects as they are, so running it twice changes nothing, and its
// events follow from the differences it writes.
type Machines struct {
	Client   *client.Client
	Recorder *client.Recorder
	// Resync is how often every machine is checked without a change
	// (default a minute).
	Resync time.Duration
	Now    func() time.Time
	// DiscoveredTTL is how long an untouched Discovered machine may go
	// unseen before it is deleted (default DefaultDiscoveredTTL; negative:
	// never).
	DiscoveredTTL time.Duration

	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers

	// byProfile files every machine under the profile it matched, so
	// a profile's count is a look-up, not a walk over every machine.
	byProfile keyIndex

	machines *client.Informer
	profiles *client.Informer
	ctl      *reconcile.Controller // machine names
	counts   *reconcile.Controller // profile names

	mu sync.Mutex
	// profileGen remembers each cached profile's generation, so that a
	// status write to a profile (its machine count) does not make every
	// machine be matched again.
	profileGen map[string]int64
}

// DefaultDiscoveredTTL is the default of Machines.DiscoveredTTL.
const DefaultDiscoveredTTL = 24 * time.Hour

// Run runs the controller until ctx ends.
func (c *Machines) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DiscoveredTTL == 0 {
		c.DiscoveredTTL = DefaultDiscoveredTTL
	}
	if c.Resync == 0 {
		c.Resync = time.Minute
	}
	c.profileGen = map[string]int64{}
	c.machines = c.Informers.informer(ctx, c.Client, "Machine")
	c.profiles = c.Informers.informer(ctx, c.Client, "MachineProfile")
	c.ctl = &reconcile.Controller{Name: "machines", Reconciler: c, Workers: 2, Resync: c.Resync, SpreadResync: true,
		List: func(context.Context) ([]string, error) { return c.machines.Keys(), nil }}
	c.counts = &reconcile.Controller{Name: "machineprofile-counts", Reconciler: reconcile.ReconcilerFunc(c.reconcileCount), Workers: 1,
		Resync: c.Resync, List: func(context.Context) ([]string, error) { return c.profiles.Keys(), nil }}
	own := enqueueOwn(c.ctl, "")
	c.machines.OnUpdateUntil(ctx, func(ch client.Change) {
		own(ch)
		// The counts of the profile it matched and the one it matches.
		var now []string
		if ch.New != nil {
			if m := ch.New.(*api.Machine); m.Status.MatchedProfile != "" && m.Metadata.DeletionTimestamp == nil {
				now = []string{m.Status.MatchedProfile}
			}
		}
		before := c.byProfile.namesOf(ch.Key)
		c.byProfile.set(ch.Key, now)
		for _, p := range append(before, now...) {
			c.counts.Enqueue(p)
		}
	})
	c.profiles.OnChangeUntil(ctx, c.profileChanged)
	if c.machines.WaitSynced(ctx) != nil || c.profiles.WaitSynced(ctx) != nil {
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- c.counts.Run(ctx) }()
	err := c.ctl.Run(ctx)
	if cerr := <-errc; err == nil {
		err = cerr
	}
	return err
}

// profileChanged recounts the profile and, when what matching looks at
// may have changed (it came, went, or its spec changed), matches every
// machine again.
func (c *Machines) profileChanged(key string, obj api.Object) {
	c.counts.Enqueue(key)
	gen := int64(-1)
	if obj != nil {
		gen = obj.GetMetadata().Generation
		if obj.GetMetadata().DeletionTimestamp != nil {
			gen = -2
		}
	}
	c.mu.Lock()
	prev, seen := c.profileGen[key]
	if obj == nil {
		delete(c.profileGen, key)
	} else {
		c.profileGen[key] = gen
	}
	c.mu.Unlock()
	if seen && prev == gen {
		return
	}
	for _, m := range c.machines.Keys() {
		c.ctl.Enqueue(m)
	}
}

func (c *Machines) profileList() []*api.MachineProfile {
	objs := c.profiles.List()
	out := make([]*api.MachineProfile, len(objs))
	for i, o := range objs {
		out[i] = o.(*api.MachineProfile)
	}
	return out
}

// Reconcile brings one machine's profile, conditions and phase up to date.
func (c *Machines) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.machines.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	m := obj.(*api.Machine)
	if m.Metadata.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	profiles := c.profileList()
	now := c.Now().UTC()
	p, matchErr := api.MatchProfile(m, profiles)
	st := machineStatus(m, p, matchErr, now)
	var result reconcile.Result
	if st.Phase == api.MachineDiscovered && c.DiscoveredTTL > 0 && untouched(m) {
		seen := lastSignOfLife(m)
		if left := seen.Add(c.DiscoveredTTL).Sub(now); left > 0 {
			result.RequeueAfter = left
		} else {
			return reconcile.Result{}, c.forget(ctx, m, seen)
		}
	}
	if !machineStatusChanged(m.Status, st) {
		return result, nil
	}
	// Conditional on the resourceVersion (client.WriteStatus): the boot
	// service writes this status too, and a phase computed from facts it
	// has since changed must not land; after a conflict the status is
	// computed again from the machine as it is then.
	var before api.MachineStatus
	out, wrote, err := client.WriteStatus(ctx, c.Client, c.machines, m, func(m *api.Machine) {
		before = m.Status
		before.Conditions = slices.Clone(m.Status.Conditions)
		p, matchErr := api.MatchProfile(m, profiles)
		if st := machineStatus(m, p, matchErr, now); machineStatusChanged(m.Status, st) {
			m.Status = st
		}
	})
	switch {
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("writing the status of Machine %s: %w", m.Metadata.Name, err)
	case wrote:
		c.recordTransitions(ctx, out, before, out.Status)
	}
	return result, nil
}

// untouched reports whether m carries nothing a person gave it: what the
// boot service creates on discovery (MAC, architecture, site) and no
// more, never changed since.
func untouched(m *api.Machine) bool {
	md, spec := m.Metadata, m.Spec
	return md.Generation <= 1 && len(md.Labels) == 0 && len(md.Annotations) == 0 && len(md.Finalizers) == 0 &&
		len(md.OwnerReferences) == 0 && md.DeletionTimestamp == nil &&
		!spec.Approved && spec.Profile == "" && spec.Hostname == "" && spec.Description == "" && spec.ReinstallRequested == nil &&
		(spec.Power.Driver == "" || spec.Power.Driver == api.PowerDriverNone) && spec.Power.Address == "" &&
		spec.Power.WOL == nil && spec.Power.Webhook == nil
}

// lastSignOfLife is when the boot service last heard from m, or when m
// was created if it never wrote.
func lastSignOfLife(m *api.Machine) time.Time {
	switch {
	case m.Status.LastSeen != nil:
		return *m.Status.LastSeen
	case m.Metadata.CreationTimestamp != nil:
		return *m.Metadata.CreationTimestamp
	}
	return time.Time{}
}

// forget deletes a stale Discovered machine, if it is still the version
// the decision was made on (a person approving it meanwhile wins).
func (c *Machines) forget(ctx context.Context, m *api.Machine, seen time.Time) error {
	k, _ := api.KindByName("Machine")
	path := api.ObjectPath(k, "", m.Metadata.Name) + "?resourceVersion=" + url.QueryEscape(m.Metadata.ResourceVersion)
	if err := c.Client.Do(ctx, http.MethodDelete, path, nil, nil); err != nil {
		if api.IsConflict(err) || api.IsNotFound(err) {
			return nil // the informer brings the newer state
		}
		return fmt.Errorf("deleting stale discovered Machine %s: %w", m.Metadata.Name, err)
	}
	c.Recorder.Eventf(ctx, m, api.EventNormal, "DiscoveredExpired",
		"deleted: it waited in phase Discovered, never approved, and the boot service has not heard from it since %s (over %s, the server's --discovered-machine-ttl); it is discovered again if it network-boots",
		seen.UTC().Format(time.RFC3339), c.DiscoveredTTL)
	return nil
}

// machineStatus is the status machine m should have with profile p (nil
// when api.MatchProfile failed with matchErr). It changes only the fields
// the controller owns: phase, conditions, matchedProfile and
// observedGeneration.
func machineStatus(m *api.Machine, p *api.MachineProfile, matchErr error, now time.Time) api.MachineStatus {
	st := m.Status
	st.Conditions = slices.Clone(m.Status.Conditions)
	gen := m.Metadata.Generation
	st.ObservedGeneration = gen
	set := func(typ string, ok bool, reason, format string, args ...any) {
		status := api.ConditionFalse
		if ok {
			status = api.ConditionTrue
		}
		st.SetCondition(api.Condition{Type: typ, Status: status, Reason: reason, Message: fmt.Sprintf(format, args...), ObservedGeneration: gen}, now)
	}
	name := m.Metadata.Name

	if p == nil {
		st.MatchedProfile = ""
		reason, msg := api.ReasonNoMatch, "machine "+name+" has no profile"
		var me *api.ProfileMatchError
		if errors.As(matchErr, &me) {
			reason, msg = me.Reason, me.Message
		} else if matchErr != nil {
			msg = matchErr.Error()
		}
		set(ConditionProfileMatched, false, reason, "%s", msg)
	} else {
		st.MatchedProfile = p.Metadata.Name
		if m.Spec.Profile != "" {
			set(ConditionProfileMatched, true, api.ReasonNamed, "profile %s, named by spec.profile", p.Metadata.Name)
		} else {
			set(ConditionProfileMatched, true, api.ReasonMatched, "profile %s selects it (specificity %d, priority %d)",
				p.Metadata.Name, p.Spec.Selector.Specificity(), p.Spec.Priority)
		}
	}

	switch {
	case m.Spec.Approved:
		set(ConditionApproved, true, api.ReasonApproved, "approved (spec.approved)")
	case p != nil && p.Spec.AutoApprove:
		set(ConditionApproved, true, api.ReasonAutoApproved, "approved by profile %s (autoApprove)", p.Metadata.Name)
	default:
		set(ConditionApproved, false, api.ReasonWaitingForApproval, "waiting for approval: hearth machine approve %s", name)
	}
	// It has booted its profile when it fetched its boot after it was
	// approved and after any pending reinstall request.
	since := st.Condition(ConditionApproved).LastTransitionTime
	if api.MachineReinstallPending(m) && (since == nil || m.Spec.ReinstallRequested.After(*since)) {
		since = m.Spec.ReinstallRequested
	}
	booted := m.Status.LastBoot != nil && (since == nil || m.Status.LastBoot.After(*since))

	install := p != nil && p.Spec.Install
	if install {
		switch {
		case api.MachineInstallDone(m):
			set(ConditionInstalled, true, api.ReasonInstalled, "the installer of profile %s reported success at %s",
				p.Metadata.Name, m.Status.InstalledAt.UTC().Format(time.RFC3339))
		case api.MachineReinstallPending(m):
			set(ConditionInstalled, false, api.ReasonReinstallRequested, "reinstall requested at %s: it boots the installer of profile %s on its next network boot",
				m.Spec.ReinstallRequested.UTC().Format(time.RFC3339), p.Metadata.Name)
		default:
			set(ConditionInstalled, false, api.ReasonNotInstalled, "the installer of profile %s has not reported success yet", p.Metadata.Name)
		}
	} else {
		st.Conditions = slices.DeleteFunc(st.Conditions, func(c api.Condition) bool { return c.Type == ConditionInstalled })
	}

	switch {
	case p == nil || !api.MachineMayBoot(m, p):
		st.Phase = api.MachineDiscovered
	case install && api.MachineInstallDone(m):
		st.Phase = api.MachineInstalled
	case !booted:
		st.Phase = api.MachineApproved
	case !install && len(m.Status.SSHHostKeys) > 0:
		st.Phase = api.MachineReady
	default:
		st.Phase = api.MachineProvisioning
	}

	// What the phase waits for, said where a person looks: a machine that
	// booted and never reports (its profile's kernel args or installer do
	// not call the report URL) would otherwise sit in Provisioning with no
	// word why.
	const how = "a POST to the boot's report URL with its token, {{ .URLs.Report }} and {{ .Token }} in the profile's templates: see \"Reaching Ready\" in docs/BOOT-TEMPLATES.md"
	switch st.Phase {
	case api.MachineProvisioning:
		at := m.Status.LastBoot.UTC().Format(time.RFC3339)
		if install {
			set(ConditionReported, false, ReasonWaitingForReport, "booted the installer of profile %s at %s; waiting for it to report success (%s)", p.Metadata.Name, at, how)
		} else {
			set(ConditionReported, false, ReasonWaitingForReport, "booted profile %s at %s; waiting for the booted system to report its SSH host keys (%s)", p.Metadata.Name, at, how)
		}
	case api.MachineReady:
		set(ConditionReported, true, api.ReasonReported, "the booted system reported its SSH host keys (%d)", len(m.Status.SSHHostKeys))
	case api.MachineInstalled:
		set(ConditionReported, true, api.ReasonReported, "the installer reported success at %s", m.Status.InstalledAt.UTC().Format(time.RFC3339))
	default:
		st.Conditions = slices.DeleteFunc(st.Conditions, func(c api.Condition) bool { return c.Type == ConditionReported })
	}
	return st
}

// machineStatusChanged compares the fields the controller writes.
func machineStatusChanged(old, cur api.MachineStatus) bool {
	if old.Phase != cur.Phase || old.MatchedProfile != cur.MatchedProfile || old.ObservedGeneration != cur.ObservedGeneration ||
		len(old.Conditions) != len(cur.Conditions) {
		return true
	}
	for i := range old.Conditions {
		a, b := old.Conditions[i], cur.Conditions[i]
		if a.Type != b.Type || a.Status != b.Status || a.Reason != b.Reason || a.Message != b.Message || a.ObservedGeneration != b.ObservedGeneration {
			return true
		}
	}
	return false
}

// recordTransitions writes an Event for each step the machine took
// between the status it had and the one just written: its boot timeline,
// beside the boot service's own DHCP, TFTP, HTTP and report events.
func (c *Machines) recordTransitions(ctx context.Context, m *api.Machine, old, cur api.MachineStatus) {
	changed := func(typ string) *api.Condition {
		n := cur.Condition(typ)
		if n == nil {
			return nil
		}
		o := old.Condition(typ)
		if o != nil && o.Status == n.Status && o.Reason == n.Reason && o.Message == n.Message {
			return nil
		}
		return n
	}
	if pm := changed(ConditionProfileMatched); pm != nil {
		if pm.Status == api.ConditionTrue {
			if cur.MatchedProfile != old.MatchedProfile {
				c.Recorder.Eventf(ctx, m, api.EventNormal, "ProfileMatched", "%s", pm.Message)
			}
		} else {
			c.Recorder.Eventf(ctx, m, api.EventWarning, pm.Reason, "%s", pm.Message)
		}
	}
	if a := changed(ConditionApproved); a != nil && a.Status == api.ConditionTrue {
		if o := old.Condition(ConditionApproved); o == nil || o.Status != api.ConditionTrue {
			c.Recorder.Eventf(ctx, m, api.EventNormal, "Approved", "%s", a.Message)
		}
	}
	if in := changed(ConditionInstalled); in != nil && in.Reason == api.ReasonReinstallRequested {
		c.Recorder.Eventf(ctx, m, api.EventNormal, "ReinstallRequested", "%s", in.Message)
	}
	if cur.Phase == old.Phase {
		return
	}
	installing := cur.Condition(ConditionInstalled) != nil
	switch cur.Phase {
	case api.MachineProvisioning:
		if installing {
			c.Recorder.Eventf(ctx, m, api.EventNormal, "InstallStarted", "booted the installer of profile %s", cur.MatchedProfile)
		} else {
			c.Recorder.Eventf(ctx, m, api.EventNormal, "Booting", "booted profile %s", cur.MatchedProfile)
		}
	case api.MachineInstalled:
		c.Recorder.Eventf(ctx, m, api.EventNormal, "Installed", "%s; it boots from its disk from now on", cur.Condition(ConditionInstalled).Message)
	case api.MachineReady:
		c.Recorder.Eventf(ctx, m, api.EventNormal, "Ready", "booted profile %s and reported its SSH host keys (%d)", cur.MatchedProfile, len(cur.SSHHostKeys))
	}
}

// reconcileCount writes how many machines boot a profile into its
// status.machines. It merge-patches that one field
// (api.MachineProfileCount) without a resourceVersion, so it never
// overwrites another writer's status.
func (c *Machines) reconcileCount(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := c.profiles.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	p := obj.(*api.MachineProfile)
	n := len(c.byProfile.keys(key))
	if p.Status.Machines == n {
		return reconcile.Result{}, nil
	}
	if _, err := c.Client.PatchStatus(ctx, "MachineProfile", "", key, api.MachineProfileCount{Machines: n}); err != nil && !api.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("writing the machine count of MachineProfile %s: %w", key, err)
	}
	return reconcile.Result{}, nil
}
