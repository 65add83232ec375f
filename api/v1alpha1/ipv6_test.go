package v1alpha1

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// TestIPv6RangeSizeDecodes: an IPv6 subnet's count of free addresses is
// capped where a JSON number still reads back as an integer, so a
// subnet read from the API decodes (a /64's 2^64 once came back as a
// float that Decode refused).
func TestIPv6RangeSizeDecodes(t *testing.T) {
	first, last := AddressRange(netip.MustParsePrefix("fd00:1::/64"), "", "")
	n := RangeSize(first, last)
	if n != MaxRangeSize {
		t.Fatalf("RangeSize of a /64 = %d, want MaxRangeSize", n)
	}
	s := &Subnet{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Subnet"}, Metadata: ObjectMeta{Name: "six", Tenant: "t"},
		Spec: SubnetSpec{Network: "n", CIDR: "fd00:1::/64"}}
	s.Status.Available = n
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("decoding a subnet with %d available: %v", n, err)
	}
	if a := got.(*Subnet).Status.Available; a != n {
		t.Errorf("available %d after a round trip, want %d", a, n)
	}
}
