package v1alpha1

import (
	"fmt"
	"strconv"
)

// VirtualMachineSet keeps a number of VMs made from one template running.
// Its controller creates VMs named SET-xxxxx that carry the template's
// labels and an owner reference to the set, deletes extras, and replaces
// VMs that are deleted.
type VirtualMachineSet = Resource[VirtualMachineSetSpec, VirtualMachineSetStatus]

type VirtualMachineSetSpec struct {
	// Replicas is how many VMs the set keeps (default 1; 0 keeps none).
	Replicas *int `json:"replicas,omitempty"`
	// Selector picks the set's VMs by label (default the template's
	// labels). It must match the template's labels, or the set would never
	// see the VMs it makes.
	Selector LabelSelector `json:"selector,omitempty"`
	Template VMTemplate    `json:"template"`
}

// VMTemplate is what each of a set's VMs is made from.
type VMTemplate struct {
	Metadata TemplateMeta `json:"metadata,omitempty"`
	// Spec is each VM's spec, as a VirtualMachine's (hearth explain
	// vm.spec).
	Spec VirtualMachineSpec `json:"spec"`
}

// TemplateMeta is the metadata a template gives the objects made from it.
type TemplateMeta struct {
	// Labels each VM gets; the set's selector must match them.
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations each VM gets.
	Annotations map[string]string `json:"annotations,omitempty"`
}

type VirtualMachineSetStatus struct {
	CommonStatus `json:",inline"`
	// Replicas counts the set's VMs; ReadyReplicas those Running.
	Replicas      int `json:"replicas"`
	ReadyReplicas int `json:"readyReplicas"`
}

// MaxSetReplicas bounds a set so a typo cannot ask for a million VMs.
const MaxSetReplicas = 1000

// DesiredReplicas returns spec.replicas, or its default.
func (s *VirtualMachineSetSpec) DesiredReplicas() int {
	if s.Replicas == nil {
		return 1
	}
	return *s.Replicas
}

func (s *VirtualMachineSetSpec) Default() {
	if s.Replicas == nil {
		one := 1
		s.Replicas = &one
	}
	if len(s.Selector) == 0 && len(s.Template.Metadata.Labels) > 0 {
		s.Selector = LabelSelector{}
		for k, v := range s.Template.Metadata.Labels {
			s.Selector[k] = v
		}
	}
	s.Template.Spec.Default()
}

func (s *VirtualMachineSetSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if r := s.DesiredReplicas(); r < 0 || r > MaxSetReplicas {
		es.Add(path+".replicas", "%d is out of range (0 to %d)", r, MaxSetReplicas)
	}
	tp := path + ".template"
	es = append(es, ValidateLabels(tp+".metadata.labels", s.Template.Metadata.Labels)...)
	if _, set := s.Template.Metadata.Annotations[AnnotationOwnerDisk]; set {
		// The set's controller makes its VMs with the cluster's authority:
		// a mark only controllers may write must not ride in on a template.
		es.Add(tp+".metadata.annotations["+AnnotationOwnerDisk+"]", "is written only by Hearth's controllers; remove it")
	}
	if len(s.Selector) == 0 {
		es.Add(path+".selector", "is required: set it or spec.template.metadata.labels, so the set can tell its VMs apart")
	} else {
		es = append(es, ValidateLabels(path+".selector", s.Selector)...)
		if !s.Selector.Matches(s.Template.Metadata.Labels) {
			es.Add(tp+".metadata.labels", "do not match spec.selector (%s)", s.Selector)
		}
	}
	es = append(es, s.Template.Spec.Validate(tp+".spec")...)
	for i, d := range s.Template.Spec.Disks {
		// Every replica would attach the same volume and write over the
		// others' data.
		if d.Volume != "" && !d.ReadOnly && d.Device != "cdrom" {
			es.Add(fmt.Sprintf("%s.spec.disks[%d].volume", tp, i), "%q would be shared by every replica; use image to give each VM its own disk, or set readOnly", d.Volume)
		}
	}
	return es
}

// ValidateUpdate keeps the selector fixed: changing it would orphan the
// set's VMs or adopt others.
func (s *VirtualMachineSetSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*VirtualMachineSetSpec)
	var es FieldErrors
	if s.Selector.String() != o.Selector.String() {
		es.Add(path+".selector", "cannot change (was %s); create a new set", o.Selector)
	}
	return es
}

func init() {
	register[VirtualMachineSetSpec, VirtualMachineSetStatus](KindInfo{
		Kind: "VirtualMachineSet", Plural: "virtualmachinesets", ShortNames: []string{"virtualmachineset", "vmset", "vmsets"}, Scope: TenantScoped,
		Description: "A number of identical virtual machines made from one template and kept running.",
		Columns: []Column{
			{Name: "DESIRED", Get: func(o Object) string { return strconv.Itoa(o.(*VirtualMachineSet).Spec.DesiredReplicas()) }},
			{Name: "CURRENT", Get: func(o Object) string { return strconv.Itoa(o.(*VirtualMachineSet).Status.Replicas) }},
			{Name: "READY", Get: func(o Object) string { return strconv.Itoa(o.(*VirtualMachineSet).Status.ReadyReplicas) }},
			{Name: "SELECTOR", Wide: true, Get: func(o Object) string { return o.(*VirtualMachineSet).Spec.Selector.String() }},
		},
	})
}
