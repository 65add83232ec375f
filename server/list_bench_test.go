package server_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
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
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				vm := nicVM("lab", fmt.Sprintf("vm-%05d", i), api.VMNIC{Network: "lan"})
				vm.Spec.CPUs, vm.Spec.Memory, vm.Spec.Host = 1, 64<<20, fmt.Sprintf("h%d", i%100)
				if _, err := c.Create(ctx, vm); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	k, _ := api.KindByName("VirtualMachine")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Do(ctx, http.MethodGet, api.CollectionPath(k, ""), nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
