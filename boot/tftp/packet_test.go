package tftp

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
)

func rrq(fields ...string) []byte {
	b := []byte{0, byte(opRRQ)}
	for _, f := range fields {
		b = append(append(b, f...), 0)
	}
	return b
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    *request // nil: malformed
		wantErr string
	}{
		{name: "plain", in: rrq("undionly.kpxe", "octet"),
			want: &request{op: opRRQ, filename: "undionly.kpxe", mode: "octet"}},
		{name: "options, case folded", in: rrq("/ipxe.efi", "OCTET", "BLKSIZE", "1432", "tsize", "0"),
			want: &request{op: opRRQ, filename: "/ipxe.efi", mode: "octet", options: []option{{"blksize", "1432"}, {"tsize", "0"}}}},
		{name: "write", in: append([]byte{0, byte(opWRQ)}, rrq("f", "netascii")[2:]...),
			want: &request{op: opWRQ, filename: "f", mode: "netascii"}},
		{name: "NUL padding skipped", in: append(rrq("f", "octet", "tsize", "0"), 0, 0, 0),
			want: &request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"tsize", "0"}}}},
		{name: "option without value dropped", in: rrq("f", "octet", "blksize"),
			want: &request{op: opRRQ, filename: "f", mode: "octet"}},
		{name: "unterminated trailing option dropped", in: append(rrq("f", "octet", "tsize", "0"), "blks"...),
			want: &request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"tsize", "0"}}}},
		{name: "empty", in: nil, wantErr: "too short"},
		{name: "one byte", in: []byte{0}, wantErr: "too short"},
		{name: "ACK", in: []byte{0, byte(opACK), 0, 1}, wantErr: "opcode 4"},
		{name: "no file name", in: rrq("", "octet"), wantErr: "file name"},
		{name: "unterminated file name", in: []byte{0, 1, 'f'}, wantErr: "file name"},
		{name: "no mode", in: rrq("f"), wantErr: "mode"},
		{name: "unterminated mode", in: append(rrq("f"), "octet"...), wantErr: "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRequest(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want an error about %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// FuzzParseRequest: no input makes the parser panic, and whatever it
// accepts re-encodes to something that parses to the same request.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range [][]byte{
		rrq("undionly.kpxe", "octet"),
		rrq("/pxelinux.cfg/01-52-54-00-12-34-56", "octet", "tsize", "0", "blksize", "1432"),
		rrq(`\boot\bcd`, "netascii", "windowsize", "8", "timeout", "3"),
		rrq("../../etc/passwd", "octet"),
		append(rrq("f", "octet", "tsize", "0"), 0, 0, 'x'),
		{0, byte(opWRQ), 'f', 0, 'o', 'c', 't', 'e', 't', 0},
		{0, byte(opACK), 0, 1},
		{0, byte(opERROR), 0, 1, 'x', 0},
		{0, 1},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		if err != nil {
			return
		}
		if req.filename == "" || strings.IndexByte(req.filename, 0) >= 0 {
			t.Fatalf("accepted file name %q", req.filename)
		}
		again, err := parseRequest(req.marshal())
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("re-parse of %+v gave %+v, %v", req, again, err)
		}
		// What the server does next with the request must not panic either.
		negotiate(req.options, int64(len(b))-1, 0)
		if p, err := cleanPath(req.filename); err == nil {
			if strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, `\`) {
				t.Fatalf("cleanPath(%q) = %q, which is not inside the root", req.filename, p)
			}
		}
	})
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"undionly.kpxe", "undionly.kpxe"},
		{"/undionly.kpxe", "undionly.kpxe"},
		{"//undionly.kpxe", "undionly.kpxe"},
		{"pxelinux.cfg/default", "pxelinux.cfg/default"},
		{`\boot\bcd`, "boot/bcd"},
		{`boot\..\bcd`, "bcd"},
		{"a/./b//c", "a/b/c"},
		{"a/../b", "b"},
		{"../../etc/passwd", ""},
		{"/../etc/passwd", ""},
		{`..\..\etc\passwd`, ""},
		{"a/../../etc/passwd", ""},
		{"..", ""},
		{"/", ""},
		{".", ""},
		{"..foo", "..foo"},
	} {
		got, err := cleanPath(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("cleanPath(%q) = %q, want refused", tc.in, got)
			}
			continue
		}
		if got != tc.want || err != nil {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNetascii(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb", "a\r\x00\r\nb"},
		{"\r", "\r\x00"},
		{"\n\n\n", "\r\n\r\n\r\n"},
	} {
		// Read one byte at a time too, to split every CR LF pair.
		for _, chunk := range []int{1, 2, 512} {
			r := newNetasciiReader(strings.NewReader(tc.in))
			var got bytes.Buffer
			buf := make([]byte, chunk)
			for {
				n, err := r.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if got.String() != tc.want {
				t.Errorf("netascii(%q) in %d-byte reads = %q, want %q", tc.in, chunk, got.String(), tc.want)
			}
		}
	}
}
