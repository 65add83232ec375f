package client

import (
	"encoding/json"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestDecodeList: a list answer is read in one pass, whatever the order
// of its fields, with fields it does not know skipped; a broken one is
// an error that says where.
func TestDecodeList(t *testing.T) {
	k, err := api.KindByName("SSHKey")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, body string
		want       []string // names, in order
		rv         string
		err        string
	}{
		{name: "as the server writes it",
			body: `{"apiVersion":"hearth.dev/v1alpha1","kind":"SSHKeyList","metadata":{"resourceVersion":"42"},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"},"spec":{"publicKey":"ssh-ed25519 AAAA"}}]}`,
			want: []string{"a", "b"}, rv: "42"},
		{name: "items before metadata", body: `{"items":[{"metadata":{"name":"a"}}],"metadata":{"resourceVersion":"7"},"extra":{"x":[1,2]}}`,
			want: []string{"a"}, rv: "7"},
		{name: "no items", body: `{"metadata":{"resourceVersion":"1"},"items":[]}`, want: []string{}, rv: "1"},
		{name: "null items", body: `{"metadata":{"resourceVersion":"1"},"items":null}`, want: []string{}, rv: "1"},
		{name: "a bad item", body: `{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":5}}]}`, err: "items[1]"},
		{name: "cut short", body: `{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}}`, err: "EOF"},
		{name: "not an object", body: `[1]`, err: "where { was expected"},
		{name: "items not a list", body: `{"items":{}}`, err: "items: got {"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, rv, err := decodeList(json.NewDecoder(strings.NewReader(tc.body)), k)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, o := range objs {
				if _, ok := o.(*api.SSHKey); !ok {
					t.Errorf("got a %T, want *api.SSHKey", o)
				}
				got = append(got, o.GetMetadata().Name)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || rv != tc.rv {
				t.Errorf("got %v at %q, want %v at %q", got, rv, tc.want, tc.rv)
			}
		})
	}
}
