package v1alpha1

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// TestLogOptions: what the client sends is what the server and the agent
// read back, and bad parameters are 400s naming the parameter.
func TestLogOptions(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	for _, o := range []LogOptions{
		{},
		{Follow: true},
		{TailBytes: n(0)},
		{Follow: true, TailLines: n(20)},
	} {
		got, err := ParseLogOptions(o.Query())
		if err != nil || !reflect.DeepEqual(got, o) {
			t.Errorf("ParseLogOptions(%q) = %+v, %v; want %+v", o.Query().Encode(), got, err, o)
		}
	}
	if q := (LogOptions{}).Query(); len(q) != 0 {
		t.Errorf("the zero options send %q, want nothing", q.Encode())
	}
	for _, tc := range []struct{ query, want string }{
		{"follow=maybe", `follow="maybe": want 1, true, 0 or false`},
		{"tail=-1", `tail="-1": want a number of bytes, 0 or more`},
		{"tailLines=x", `tailLines="x": want a number of lines, 0 or more`},
		{"tail=1&tailLines=1", "give tail (bytes) or tailLines, not both"},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, err := ParseLogOptions(q)
		if ReasonOf(err) != ReasonBadRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseLogOptions(%s) = %v, want a BadRequest saying %s", tc.query, err, tc.want)
		}
	}
}
