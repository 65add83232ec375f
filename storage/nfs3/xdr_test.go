package nfs3

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"testing"
)

// TestReadRecord checks that fragments are joined and that a server
// cannot make the client read without bound.
func TestReadRecord(t *testing.T) {
	frag := func(last bool, data []byte) []byte {
		h := uint32(len(data))
		if last {
			h |= 0x80000000
		}
		return append(binary.BigEndian.AppendUint32(nil, h), data...)
	}
	in := append(frag(false, []byte("abcd")), frag(true, []byte("efgh"))...)
	got, err := readRecord(bytes.NewReader(in))
	if err != nil || string(got) != "abcdefgh" {
		t.Errorf("two fragments: got %q, %v; want abcdefgh", got, err)
	}
	huge := binary.BigEndian.AppendUint32(nil, 0x80000000|(maxReply+1))
	if _, err := readRecord(bytes.NewReader(huge)); err == nil {
		t.Errorf("a record over %d bytes: got nil, want an error", maxReply)
	}
	if _, err := readRecord(bytes.NewReader(frag(true, []byte("ab"))[:5])); err == nil {
		t.Errorf("a cut record: got nil, want an error")
	}
}

// TestXDRReader checks that short and oversized values are errors, not
// panics, and that the first error sticks.
func TestXDRReader(t *testing.T) {
	var w xdrWriter
	w.u32(7)
	w.opaque([]byte("handle"))
	r := xdrReader{b: w.b}
	if r.u32() != 7 || string(r.opaque()) != "handle" || r.err != nil {
		t.Fatalf("round trip failed: %v", r.err)
	}
	if r.u32(); r.err == nil {
		t.Errorf("reading past the end: no error")
	}
	big := xdrReader{b: binary.BigEndian.AppendUint32(nil, 1<<20)}
	if big.opaque(); big.err == nil {
		t.Errorf("an opaque of 1 MiB in a 4-byte reply: no error")
	}
	short := xdrReader{b: binary.BigEndian.AppendUint32(nil, 8)}
	if short.opaque(); short.err == nil {
		t.Errorf("an opaque longer than the reply: no error")
	}
}

func TestErrorIs(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want error
	}{{2, fs.ErrNotExist}, {17, fs.ErrExist}, {13, fs.ErrPermission}} {
		if !errors.Is(tc.e, tc.want) {
			t.Errorf("%v is not %v", tc.e, tc.want)
		}
	}
	if errors.Is(Error(5), fs.ErrNotExist) {
		t.Errorf("NFS3ERR_IO is fs.ErrNotExist")
	}
}
