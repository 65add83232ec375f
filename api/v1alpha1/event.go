package v1alpha1

import (
	"strconv"
	"time"
)

// Event records something that happened to an object: a host going
// NotReady, a VM restarted, a machine's DHCP request. Events belong to the
// tenant of the object they are about (none for cluster objects) and expire
// after a while.
type Event = Resource[EventSpec, EventStatus]

type EventSpec struct {
	InvolvedObject ObjectReference `json:"involvedObject"`
	// Type is Normal or Warning.
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// Source names who reported it: "hearth-server", "host/h1",
	// "boot/boot". Hosts and boot services must give their own name.
	Source string `json:"source,omitempty"`
	// Count is how many times the same event repeated; the times say when
	// it was first and last seen.
	Count          int        `json:"count,omitempty"`
	FirstTimestamp *time.Time `json:"firstTimestamp,omitempty"`
	LastTimestamp  *time.Time `json:"lastTimestamp,omitempty"`
}

// ObjectReference names an object.
type ObjectReference struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Tenant string `json:"tenant,omitempty"`
	UID    string `json:"uid,omitempty"`
}

type EventStatus struct {
	CommonStatus `json:",inline"`
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

func (s *EventSpec) Default() {
	if s.Type == "" {
		s.Type = EventNormal
	}
	if s.Count == 0 {
		s.Count = 1
	}
}

func (s *EventSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	es = append(es, ValidateOneOf(path+".type", s.Type, EventNormal, EventWarning)...)
	if s.Reason == "" {
		es.Add(path+".reason", "is required")
	}
	if _, ok := kinds[s.InvolvedObject.Kind]; !ok {
		es.Add(path+".involvedObject.kind", "%q is not a Hearth kind", s.InvolvedObject.Kind)
	}
	if s.InvolvedObject.Name == "" {
		es.Add(path+".involvedObject.name", "is required")
	}
	if len(s.Message) > 4096 {
		es.Add(path+".message", "is longer than 4096 characters")
	}
	return es
}

func init() {
	register[EventSpec, EventStatus](KindInfo{
		Kind: "Event", Plural: "events", ShortNames: []string{"event", "ev"}, Scope: TenantOptional,
		Description: "Something that happened to an object, with a reason and a message.",
		Columns: []Column{
			{Name: "TYPE", Get: func(o Object) string { return o.(*Event).Spec.Type }},
			{Name: "REASON", Get: func(o Object) string { return o.(*Event).Spec.Reason }},
			{Name: "OBJECT", Get: func(o Object) string {
				r := o.(*Event).Spec.InvolvedObject
				return r.Kind + "/" + r.Name
			}},
			{Name: "COUNT", Wide: true, Get: func(o Object) string { return strconv.Itoa(o.(*Event).Spec.Count) }},
			{Name: "MESSAGE", Get: func(o Object) string { return o.(*Event).Spec.Message }},
		},
	})
}
