package v1alpha1

import (
	"time"
)

// Group and Version name this API; APIVersion is what objects carry.
const (
	Group      = "hearth.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// TypeMeta says what an object is. It is embedded (inlined) in every kind.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// OwnerReference points at an object that owns this one. When every owner
// is gone, the garbage collector deletes the dependent.
type OwnerReference struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	UID  string `json:"uid"`
	// Controller marks the one owner that manages this object (a
	// VirtualMachineSet for its VMs, say).
	Controller bool `json:"controller,omitempty"`
}

// ObjectMeta is the metadata every object carries. The server owns uid,
// resourceVersion, generation and the timestamps; clients set the rest.
type ObjectMeta struct {
	Name string `json:"name"`
	// Tenant is set for tenant-scoped kinds and empty for cluster-scoped ones.
	Tenant      string            `json:"tenant,omitempty"`
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// ResourceVersion is etcd's mod revision of the object. Sending it back
	// on an update makes the update conditional (409 when it is stale).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation counts changes to spec; status.observedGeneration says
	// which generation the writer of status has acted on.
	Generation        int64            `json:"generation,omitempty"`
	CreationTimestamp *time.Time       `json:"creationTimestamp,omitempty"`
	UpdateTimestamp   *time.Time       `json:"updateTimestamp,omitempty"`
	DeletionTimestamp *time.Time       `json:"deletionTimestamp,omitempty"`
	Finalizers        []string         `json:"finalizers,omitempty"`
	OwnerReferences   []OwnerReference `json:"ownerReferences,omitempty"`
}

// HasFinalizer reports whether f is among the object's finalizers.
func (m *ObjectMeta) HasFinalizer(f string) bool {
	for _, x := range m.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

// ConditionStatus is the state of a condition.
type ConditionStatus string

const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// Condition is one observation about an object, in the Kubernetes style: a
// type (Ready, Scheduled, …), a status, and a reason and message a person
// can act on.
type Condition struct {
	Type               string          `json:"type"`
	Status             ConditionStatus `json:"status"`
	Reason             string          `json:"reason,omitempty"`
	Message            string          `json:"message,omitempty"`
	LastTransitionTime *time.Time      `json:"lastTransitionTime,omitempty"`
	ObservedGeneration int64           `json:"observedGeneration,omitempty"`
}

// CommonStatus is embedded in every kind's status.
type CommonStatus struct {
	Phase              string      `json:"phase,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
}

// Common returns the embedded common status.
func (s *CommonStatus) Common() *CommonStatus { return s }

// Condition returns the condition of type t, or nil.
func (s *CommonStatus) Condition(t string) *Condition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			return &s.Conditions[i]
		}
	}
	return nil
}

// SetCondition adds or replaces the condition of c.Type. The transition
// time moves only when the status changes, so it tells how long a state
// has held. It reports whether anything changed.
func (s *CommonStatus) SetCondition(c Condition, now time.Time) bool {
	old := s.Condition(c.Type)
	if old == nil {
		c.LastTransitionTime = &now
		s.Conditions = append(s.Conditions, c)
		return true
	}
	if old.Status != c.Status {
		c.LastTransitionTime = &now
	} else {
		c.LastTransitionTime = old.LastTransitionTime
	}
	changed := old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message || old.ObservedGeneration != c.ObservedGeneration
	*old = c
	return changed
}

// Object is what every kind implements. The generic machinery (store,
// server, client, CLI) works on Objects; typed code uses the concrete kinds.
type Object interface {
	GetTypeMeta() *TypeMeta
	GetMetadata() *ObjectMeta
	// SpecAny and StatusAny return pointers to the object's spec and status.
	SpecAny() any
	StatusAny() any
	// CommonStatus returns the phase, conditions and observedGeneration
	// every status carries.
	CommonStatus() *CommonStatus
}

// GetTypeMeta returns the type metadata; kinds get it by embedding TypeMeta.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// Resource is the shape of every kind: type, metadata, spec and status. Each
// kind is an alias of it (type Network = Resource[NetworkSpec, NetworkStatus]),
// so the methods the generic machinery needs are written once.
type Resource[S any, T any] struct {
	TypeMeta `json:",inline"`
	// Metadata names the object and carries its labels, annotations and
	// the server's bookkeeping (uid, resourceVersion, generation).
	Metadata ObjectMeta `json:"metadata"`
	// Spec is what the object should be: written by people, apply and
	// controllers that own a field (the scheduler's spec.host).
	Spec S `json:"spec"`
	// Status is what Hearth observed and did, written only through the
	// object's /status by the controllers and agents responsible.
	Status T `json:"status"`
}

func (r *Resource[S, T]) GetMetadata() *ObjectMeta { return &r.Metadata }
func (r *Resource[S, T]) SpecAny() any             { return &r.Spec }
func (r *Resource[S, T]) StatusAny() any           { return &r.Status }

// CommonStatus returns the status's embedded CommonStatus.
func (r *Resource[S, T]) CommonStatus() *CommonStatus {
	if c, ok := any(&r.Status).(interface{ Common() *CommonStatus }); ok {
		return c.Common()
	}
	return &CommonStatus{}
}

// Ref names an object in messages: kind/name or kind/tenant/name.
func Ref(o Object) string {
	m := o.GetMetadata()
	if m.Tenant != "" {
		return o.GetTypeMeta().Kind + "/" + m.Tenant + "/" + m.Name
	}
	return o.GetTypeMeta().Kind + "/" + m.Name
}

// LastAppliedAnnotation holds, as JSON, the configuration `hearth apply`
// last wrote for an object: what its file said, and nothing the server or
// another writer added. The next apply compares with it to tell a field
// the file stopped setting (removed) from one it never set (left alone).
const LastAppliedAnnotation = "hearth.dev/last-applied-configuration"
