package server

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadAllSized: a body is read whole whatever length it claims (its
// own, none, less or more than it holds, one byte at a time), in one
// allocation when the claim is right, and a read error is returned.
func TestReadAllSized(t *testing.T) {
	body := strings.Repeat(`{"status":{"phase":"Running"}}`, 100) // 3,000 bytes
	for _, tc := range []struct {
		name string
		size int64
		rd   func() io.Reader
	}{
		{"its length", int64(len(body)), func() io.Reader { return strings.NewReader(body) }},
		{"unknown", -1, func() io.Reader { return strings.NewReader(body) }},
		{"less than it holds", 10, func() io.Reader { return strings.NewReader(body) }},
		{"more than it holds", 10_000, func() io.Reader { return strings.NewReader(body) }},
		{"a byte at a time", int64(len(body)), func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) }},
		{"larger than any body", maxBody + 10, func() io.Reader { return strings.NewReader(body) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAllSized(tc.rd(), tc.size)
			if err != nil || string(got) != body {
				t.Errorf("read %d bytes, %v; want the %d bytes of the body", len(got), err, len(body))
			}
		})
	}
	data := []byte(body)
	if n := testing.AllocsPerRun(20, func() {
		_, _ = readAllSized(bytes.NewReader(data), int64(len(data)))
	}); n > 2 {
		t.Errorf("reading a body of known length: %.0f allocations, want at most 2 (the reader and the buffer)", n)
	}
	boom := errors.New("boom")
	if _, err := readAllSized(iotest.ErrReader(boom), 100); !errors.Is(err, boom) {
		t.Errorf("a failing read: %v, want %v", err, boom)
	}
}
