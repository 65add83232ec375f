package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/ipam"
	"hearth.dev/hearth/server/servertest"
)

// BenchmarkNICCreate creates VMs with one NIC, each taking the lowest
// free address of a /16 subnet in which `held` addresses are already
// taken (keys written straight to etcd, as if by that many VMs). The cost
// per create must not grow with held: IPAM finds the lowest free address
// from its hints and one point read, not from every key of the subnet.
//
//	go test ./server -run XXX -bench NICCreate -benchtime 300x
func BenchmarkNICCreate(b *testing.B) {
	for _, held := range []int{0, 2000, 16000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			env := servertest.Start(b, servertest.WithoutControllers())
			env.Tenant("lab")
			ctx := context.Background()
			c := env.Admin
			if _, err := c.Create(ctx, network("lab", "lan", "")); err != nil {
				b.Fatal(err)
			}
			o, err := c.Create(ctx, subnet("lab", "big", "lan", "10.6.0.0/16"))
			if err != nil {
				b.Fatal(err)
			}
			uid := o.(*api.Subnet).Metadata.UID
			a := netip.MustParseAddr("10.6.0.2")
			for done := 0; done < held; {
				var ops []clientv3.Op
				for ; done < held && len(ops) < 100; done++ {
					ops = append(ops, clientv3.OpPut(ipam.IPPrefix+uid+"/"+a.String(), fmt.Sprintf(`{"kind":"VirtualMachine","tenant":"lab","name":"old%d","uid":"u%d"}`, done, done)))
					a = a.Next()
				}
				if _, err := env.Server.Etcd().Txn(ctx).Then(ops...).Commit(); err != nil {
					b.Fatal(err)
				}
			}
			// The first create reads the subnet's keys once.
			if _, err := c.Create(ctx, nicVM("lab", "first", api.VMNIC{Network: "lan"})); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				out, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("vm%d", i), api.VMNIC{Network: "lan"}))
				if err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					if got := out.(*api.VirtualMachine).Status.Interfaces[0].IP; got != a.Next().String() {
						b.Fatalf("got %s, want the lowest free %s", got, a.Next())
					}
				}
			}
		})
	}
}

// BenchmarkNICCreateManyNetworks creates VMs with one NIC round-robin
// over 52 networks of one subnet each (the scale bench's 13,000 VMs in
// networks of 250): every create reads all of its tenant's subnets to
// find its network's. Each subnet is decoded once per stored revision
// and without its status, and the network without its status.
//
//	go test ./server -run XXX -bench NICCreateManyNetworks -benchtime 500x
func BenchmarkNICCreateManyNetworks(b *testing.B) {
	const networks = 52
	env := servertest.Start(b, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := context.Background()
	c := env.Admin
	for i := range networks {
		n := fmt.Sprintf("net%02d", i)
		if _, err := c.Create(ctx, network("lab", n, "")); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Create(ctx, subnet("lab", "sub"+n, n, fmt.Sprintf("10.%d.0.0/23", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("vm%d", i), api.VMNIC{Network: fmt.Sprintf("net%02d", i%networks)})); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNICCreateOneNetwork creates VMs with one NIC on ONE network
// that already has `vms` VMs (created through the API beforehand), whose
// status lists a port for each of them as the networks controller
// publishes it once they are placed. The cost per create must not grow
// with the VMs on the network: a create reads neither the network's
// status nor the subnet's every key.
//
//	go test ./server -run XXX -bench NICCreateOneNetwork -benchtime 200x
func BenchmarkNICCreateOneNetwork(b *testing.B) {
	for _, vms := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("vms=%d", vms), func(b *testing.B) {
			env := servertest.Start(b, servertest.WithoutControllers())
			env.Tenant("lab")
			ctx := context.Background()
			c := env.Admin
			if _, err := c.Create(ctx, network("lab", "lan", "")); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Create(ctx, subnet("lab", "big", "lan", "10.6.0.0/16")); err != nil {
				b.Fatal(err)
			}
			ports := make([]api.NetworkPort, vms)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < vms; i += 8 {
						o, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("old%05d", i), api.VMNIC{Network: "lan"}))
						if err != nil {
							errs <- err
							return
						}
						ifc := o.(*api.VirtualMachine).Status.Interfaces[0]
						ports[i] = api.NetworkPort{VM: o.GetMetadata().Name, Host: fmt.Sprintf("host%03d", i%100), MAC: ifc.MAC, IPs: []string{ifc.IP}}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			// The network's status as the networks controller writes it
			// once every VM is placed.
			o, err := c.Get(ctx, "Network", "lab", "lan")
			if err != nil {
				b.Fatal(err)
			}
			n := o.(*api.Network)
			n.Status.Ports = ports
			for i := range 100 {
				n.Status.Hosts = append(n.Status.Hosts, fmt.Sprintf("host%03d", i))
			}
			if _, err := c.UpdateStatus(ctx, n); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("vm%05d", i), api.VMNIC{Network: "lan"})); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
