package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// cutReader reads data and then fails with err, as a connection that
// drops does.
type cutReader struct {
	r   io.Reader
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = c.err
	}
	return n, err
}

// TestReadListAgrees: readList (the list split and decoded on every CPU)
// gives what decodeList, the one-pass reader, gives: the same objects in
// the same order, the same resourceVersion, the same error.
func TestReadListAgrees(t *testing.T) {
	k, err := api.KindByName("VirtualMachine")
	if err != nil {
		t.Fatal(err)
	}
	item := func(i int) string {
		vm := api.Examples()["VirtualMachine"].(*api.VirtualMachine)
		vm.Metadata.Name = fmt.Sprintf("vm-%d", i)
		vm.Metadata.Labels = map[string]string{"i": fmt.Sprint(i)}
		data, err := json.Marshal(vm)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	many := func(n int, bad int, badItem string) string {
		var b strings.Builder
		b.WriteString(`{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachineList","metadata":{"resourceVersion":"9"},"items":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			if i == bad {
				b.WriteString(badItem)
			} else {
				b.WriteString(item(i))
			}
		}
		b.WriteString("]}\n")
		return b.String()
	}
	bodies := []string{
		many(0, -1, ""), many(1, -1, ""), many(700, -1, ""),
		many(700, 650, `{"metadata":{"name":5}}`), many(700, 3, `{"spec":{"memory":"lots"}}`),
		many(700, 400, `{"metadata":{"name":"dup","name":"twice"}}`), many(700, 10, "{\"metadata\":{\"name\":\"a\xff\"}}"),
		many(5, 2, `{"Metadata":{"NAME":"loud"},"spec":{"CPUs":3},"unknown":{"x":1}}`), many(3, 1, `null`),
		many(3, 1, `{}`), many(3, 0, `[]`),
		`{"items":[` + item(1) + `],"items":[` + item(2) + `],"metadata":{"resourceVersion":"1"}}`,
		`{"metadata":{"resourceVersion":"1"},"metadata":{"resourceVersion":"2"}}`,
		`{"metadata":{"resourceVersion":"1"},"items":null}`, `{"metadata":null,"items":[]}`,
		`{"metadata":{"resourceVersion":"1"},"items":[]} trailing`, `{"metadata":{"resourceVersion":"1"},"items":[]}}`,
		`{"metadata":{"resourceVersion":"1"},"items":[` + item(1), `{"items":{}}`, `{"items":"x"}`, `[1]`, ``, `{`,
		`{"extra":[1,{"a":"\u00e9"}],"Items":[` + item(1) + `],"metadata":{"resourceVersion":"4","x":1}}`,
		"{\"ex\xfftra\":1,\"items\":[]}", `{"metadata":{"resourceVersion":5},"items":[]}`,
		`{"metadata":{"resourceVersion":"1"},"items":[` + item(1) + `,]}`,
	}
	// The fast way is taken where it should be.
	for _, body := range bodies[:3] {
		if _, _, ok := splitList([]byte(body), k); !ok {
			t.Errorf("a list as the server writes it was not split: %.80s", body)
		}
	}
	for i, body := range bodies {
		for _, cut := range []error{nil, errors.New("connection reset")} {
			var r1, r2 io.Reader = strings.NewReader(body), strings.NewReader(body)
			if cut != nil {
				r1, r2 = &cutReader{r1, cut}, &cutReader{r2, cut}
			}
			got, gotRV, gotErr := readList(r1, k)
			want, wantRV, wantErr := decodeList(json.NewDecoder(r2), k)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || gotRV != wantRV || !reflect.DeepEqual(got, want) {
				t.Errorf("body %d (cut %v): got %d items at %q, error %v; want %d items at %q, error %v",
					i, cut, len(got), gotRV, gotErr, len(want), wantRV, wantErr)
			}
		}
	}
}

// TestDecodeBodyAgrees: an answer is decoded as json.Decoder.Decode did.
func TestDecodeBodyAgrees(t *testing.T) {
	vm, _ := json.Marshal(api.Examples()["VirtualMachine"])
	bodies := []string{string(vm), string(vm) + "\n", string(vm) + " trailing", string(vm) + string(vm), "", "{",
		`{"metadata":{"name":5}}`, `{"Metadata":{"Name":"x"},"bogus":1}`, `null`, `{"a":1,"a":2}`}
	for i, body := range bodies {
		for _, newOut := range []func() any{
			func() any { return &api.VirtualMachine{} },
			func() any { return api.Examples()["VirtualMachine"] }, // not fresh: encoding/json decides
			func() any { var m map[string]any; return &m },
		} {
			got, want := newOut(), newOut()
			gotErr := decodeBody(&http.Response{Body: io.NopCloser(strings.NewReader(body))}, got)
			wantErr := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(want)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
				t.Errorf("body %d into %T: got %+v, %v; want %+v, %v", i, got, got, gotErr, want, wantErr)
			}
		}
	}
}

// TestWatchEnvelopeAgrees: a watch event's envelope is read by
// api.Unmarshal as encoding/json read it (WatchOnce's own struct).
func TestWatchEnvelopeAgrees(t *testing.T) {
	type envelope struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	vm, _ := json.Marshal(api.Examples()["VirtualMachine"])
	lines := []string{`{"type":"ADDED","object":` + string(vm) + `}`, `{"type":"DELETED","object":null}`, `{"type":"BOOKMARK"}`,
		`{"TYPE":"ADDED","Object":{"a":1}}`, `{"type":"ADDED","object":{ "a" : [1, 2] } }`, `{"type":"A","type":"B","object":1,"object":2}`,
		`{"type":5}`, `{"type":"ERROR","object":{"message":"gone","code":410}}`, `{"type":"ADDED","object":{"a":1}} x`, ``, `null`}
	for _, line := range lines {
		var got, want envelope
		gotErr, wantErr := api.Unmarshal([]byte(line), &got), json.Unmarshal([]byte(line), &want)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q %q, %v; want %q %q, %v", line, got.Type, got.Object, gotErr, want.Type, want.Object, wantErr)
		}
	}
}
