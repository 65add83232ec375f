package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// vmList is a VirtualMachineList of n VMs as a server writes it: each VM
// the example one, placed, running, with its NIC's addresses and the
// conditions a running VM has.
func vmList(t testing.TB, n int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"apiVersion":%q,"kind":"VirtualMachineList","metadata":{"resourceVersion":"123456"},"items":[`, api.APIVersion)
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	for i := range n {
		vm := api.Examples()["VirtualMachine"].(*api.VirtualMachine)
		vm.Metadata.Name = fmt.Sprintf("vm-%05d", i)
		vm.Metadata.Tenant = "lab"
		vm.Metadata.UID = fmt.Sprintf("0b7c6f9e-%08d-4d2b-9a51-3c1e2f4a5b6c", i)
		vm.Metadata.ResourceVersion = fmt.Sprint(100000 + i)
		vm.Metadata.CreationTimestamp = &now
		vm.Metadata.Labels = map[string]string{"app": "web", "bench": "list"}
		vm.Spec.Host = fmt.Sprintf("h%03d", i%100)
		vm.Status.Phase = "Running"
		vm.Status.Host = vm.Spec.Host
		vm.Status.PID = 4000 + i
		vm.Status.Accelerator = "tcg"
		vm.Status.StartedAt = &now
		vm.Status.Interfaces = []api.VMInterfaceStatus{{Network: "net1", Subnet: "net1-a",
			IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8&255, i&255)}}
		for _, c := range []string{"Scheduled", "Ready", "Started"} {
			vm.Status.Conditions = append(vm.Status.Conditions, api.Condition{Type: c, Status: api.ConditionTrue,
				Reason: c, Message: "the VM is " + c, LastTransitionTime: &now, ObservedGeneration: 1})
		}
		data, err := json.Marshal(vm)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(data)
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

// listServer serves body as every list of VirtualMachines, over TLS, and
// returns a client of it.
func listServer(t testing.TB, body []byte) *client.Client {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := client.New(&client.Context{Name: "bench", Server: srv.URL, CertificateAuthority: string(ca), Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BenchmarkListVMs lists 5,000 VMs (about 5 MB of JSON) from a server
// that sends them at once: what is measured is the client reading and
// decoding them.
//
//	go test ./client -run '^$' -bench ListVMs -benchmem
func BenchmarkListVMs(b *testing.B) {
	const n = 5000
	body := vmList(b, n)
	c := listServer(b, body)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		items, rv, err := c.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(items) != n || rv != "123456" {
			b.Fatalf("got %d items at %q, want %d at 123456", len(items), rv, n)
		}
	}
}
