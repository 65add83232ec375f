package server_test

import (
	"context"
	"fmt"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// benchLab starts a server without controllers for a benchmark, with
// tenant "lab" holding objs (networks and subnets, usually).
func benchLab(b *testing.B, objs ...api.Object) *servertest.Env {
	b.Helper()
	env := servertest.Start(b, servertest.WithoutControllers())
	env.Tenant("lab")
	for _, o := range objs {
		if _, err := env.Admin.Create(context.Background(), o); err != nil {
			b.Fatal(err)
		}
	}
	return env
}

// oneLAN is network "lan" with subnet "sub", 10.6.0.0/16, in "lab".
func oneLAN() []api.Object {
	return []api.Object{network("lab", "lan", ""), subnet("lab", "sub", "lan", "10.6.0.0/16")}
}

// manyNetworks is n networks net-00, net-01, … in "lab", each with one
// /22 subnet (net-07-a is 10.7.0.0/22), as the scale bench makes them.
func manyNetworks(n int) []api.Object {
	var objs []api.Object
	for i := range n {
		name := fmt.Sprintf("net-%02d", i)
		objs = append(objs, network("lab", name, ""), subnet("lab", name+"-a", name, fmt.Sprintf("10.%d.0.0/22", i)))
	}
	return objs
}
