package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// BenchmarkListEveryVM lists 3,000 VMs across tenants as the scale
// bench's "read without decoding" does (an admin, every tenant, the
// answer read to its end and not decoded): the server's part of a list
// of every VM. Client and server in one process.
//
//	go test ./server -run '^$' -bench ListEveryVM -benchmem -benchtime 20x
func BenchmarkListEveryVM(b *testing.B) {
	env := benchLab(b, oneLAN()...)
	ctx := context.Background()
	c := env.Admin
	const n = 3000
	parallel(b, n, func(i int) error {
		vm := nicVM("lab", fmt.Sprintf("vm-%05d", i), api.VMNIC{Network: "lan"})
		vm.Spec.CPUs, vm.Spec.Memory, vm.Spec.Host = 1, 64<<20, fmt.Sprintf("h%d", i%100)
		_, err := c.Create(ctx, vm)
		return err
	})
	k, _ := api.KindByName("VirtualMachine")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Do(ctx, http.MethodGet, api.CollectionPath(k, ""), nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
