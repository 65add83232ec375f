package tftp

import (
	"bufio"
	"io"
)

// netasciiReader converts a file to netascii (RFC 764, as RFC 1350 asks):
// LF becomes CR LF and a bare CR becomes CR NUL. Clients undo exactly that,
// so a client that asks for netascii — tftp-hpa does unless told "-m
// binary" — still ends up with the file's bytes. Boot firmware always asks
// for octet.
type netasciiReader struct {
	r       *bufio.Reader
	pending byte // second byte of a pair that did not fit in the last Read
	held    bool
}

func newNetasciiReader(r io.Reader) *netasciiReader {
	return &netasciiReader{r: bufio.NewReader(r)}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	if n.held && len(p) > 0 {
		p[0], n.held = n.pending, false
		i = 1
	}
	for i < len(p) {
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 {
				return i, nil
			}
			return 0, err
		}
		var second byte
		pair := true
		switch c {
		case '\n':
			c, second = '\r', '\n'
		case '\r':
			second = 0
		default:
			pair = false
		}
		p[i] = c
		i++
		if !pair {
			continue
		}
		if i < len(p) {
			p[i] = second
			i++
		} else {
			n.pending, n.held = second, true
		}
	}
	return i, nil
}
