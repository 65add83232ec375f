package dataplane_test

import (
	"context"
	"net/netip"
	"testing"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
)

func TestRecorderChecksStates(t *testing.T) {
	r := dataplanetest.NewRecorder()
	s := dataplane.HostState{
		Underlay: dataplane.Underlay{Device: "eth0", Address: netip.MustParseAddr("192.0.2.1")},
		Networks: []dataplane.Network{{Name: "t/n", VNI: 7}},
	}
	bad := s
	bad.Networks = []dataplane.Network{{Name: "t/n", VNI: 0}}
	if err := r.Apply(context.Background(), bad); err == nil {
		t.Error("the Recorder took an invalid state")
	}
	if err := r.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Last(); !ok || got.Networks[0].VNI != 7 || len(r.Applied()) != 1 {
		t.Errorf("Recorder kept %v", r.Applied())
	}
	if got, want := r.RouterNetns(7), dataplane.RouterNetnsName(dataplane.DefaultNetnsPrefix, 7); got != want {
		t.Errorf("RouterNetns(7) = %q, want %q", got, want)
	}
}
