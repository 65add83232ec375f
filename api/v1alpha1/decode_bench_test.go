package v1alpha1

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// benchVM is a VirtualMachine as the server stores it once it runs: the
// example one, placed, with its NIC's addresses and the conditions a
// running VM has.
func benchVM() *VirtualMachine {
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	vm := Examples()["VirtualMachine"].(*VirtualMachine)
	vm.Metadata.Tenant = "lab"
	vm.Metadata.UID = "0b7c6f9e-00000042-4d2b-9a51-3c1e2f4a5b6c"
	vm.Metadata.ResourceVersion = "100042"
	vm.Metadata.Generation = 1
	vm.Metadata.CreationTimestamp = &now
	vm.Metadata.Labels = map[string]string{"app": "web", "bench": "decode"}
	vm.Spec.Host = "h042"
	vm.Spec.NICs[0].MAC = "52:54:00:00:00:2a"
	vm.Status.Phase = "Running"
	vm.Status.Host = vm.Spec.Host
	vm.Status.PID = 4042
	vm.Status.Accelerator = "tcg"
	vm.Status.StartedAt = &now
	vm.Status.Interfaces = []VMInterfaceStatus{{Network: "net1", Subnet: "net1-a", IP: "10.0.0.42", MAC: "52:54:00:00:00:2a"}}
	for _, c := range []string{"Scheduled", "Ready", "Started"} {
		vm.Status.Conditions = append(vm.Status.Conditions, Condition{Type: c, Status: ConditionTrue,
			Reason: c, Message: "the VM is " + c, LastTransitionTime: &now, ObservedGeneration: 1})
	}
	return vm
}

// benchNetwork is a Network carried by 20 hosts with 40 ports, as its
// status is published while VMs on it run.
func benchNetwork() *Network {
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	n := Examples()["Network"].(*Network)
	n.Metadata.Tenant = "lab"
	n.Metadata.UID = "5d1e0c2a-0000-4d2b-9a51-3c1e2f4a5b6c"
	n.Metadata.ResourceVersion = "99"
	n.Metadata.CreationTimestamp = &now
	n.Status.Phase = "Ready"
	n.Status.VNI = 4242
	n.Status.Conditions = []Condition{{Type: "Ready", Status: ConditionTrue, Reason: "Allocated", LastTransitionTime: &now}}
	for h := range 20 {
		host := fmt.Sprintf("h%03d", h)
		n.Status.Hosts = append(n.Status.Hosts, host)
		n.Status.Routers = append(n.Status.Routers, NetworkRouter{Host: host})
		for p := range 2 {
			i := h*2 + p
			n.Status.Ports = append(n.Status.Ports, NetworkPort{VM: fmt.Sprintf("vm-%03d", i), Host: host,
				MAC: fmt.Sprintf("52:54:00:00:00:%02x", i), IPs: []string{fmt.Sprintf("10.0.0.%d", 10+i)}})
		}
	}
	return n
}

func benchDecode(b *testing.B, obj Object) {
	data, err := json.Marshal(obj)
	if err != nil {
		b.Fatal(err)
	}
	k, _ := KindByName(obj.GetTypeMeta().Kind)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeInto(data, k.New()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeVM and BenchmarkDecodeNetwork decode one stored object
// strictly, as the server does for a request body and the store for what
// it reads (issue 16's sixth pass).
//
//	go test ./api/v1alpha1 -run '^$' -bench 'Decode|DeepCopy' -benchmem
func BenchmarkDecodeVM(b *testing.B)      { benchDecode(b, benchVM()) }
func BenchmarkDecodeNetwork(b *testing.B) { benchDecode(b, benchNetwork()) }

// BenchmarkDeepCopyVM copies the running VM, as informers' readers and
// the agent do for every object they change.
func BenchmarkDeepCopyVM(b *testing.B) {
	vm := benchVM()
	b.ReportAllocs()
	for b.Loop() {
		_ = DeepCopy(vm)
	}
}
