package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
)

// The monitor reads the same few files of /proc every sample, in every
// agent: on a small host, and on `hearth bench scale`'s thousand
// simulated hosts in one process, what a sample costs is what matters,
// so the files stay open and are read into buffers that stay too, and
// they are parsed without making strings of what is skipped.

// procFile is a file of /proc or /sys read afresh at every sample: kept
// open and read from its start (a read at offset 0 has the kernel make
// its contents again) into a buffer kept between reads. A file that
// cannot be read any more (its device went) is opened again once.
type procFile struct {
	path string
	f    *os.File
	buf  []byte
}

// read returns the file's contents, valid until the next read.
func (p *procFile) read() ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if p.f == nil {
			f, err := os.Open(p.path)
			if err != nil {
				return nil, err
			}
			p.f = f
		}
		data, err := p.readAll()
		if err == nil {
			return data, nil
		}
		p.close()
		if attempt > 0 {
			return nil, err
		}
	}
}

func (p *procFile) readAll() ([]byte, error) {
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	n := 0
	for {
		m, err := p.f.ReadAt(p.buf[n:], int64(n))
		n += m
		switch {
		case errors.Is(err, io.EOF):
			return p.buf[:n], nil
		case err != nil:
			return nil, err
		}
		// Full: the file is bigger than the buffer.
		p.buf = append(p.buf, make([]byte, len(p.buf))...)
	}
}

func (p *procFile) close() {
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// fields splits a line at blanks into dst (reused), as strings.Fields
// does, without copying.
func fields(dst [][]byte, line []byte) [][]byte {
	dst = dst[:0]
	for {
		i := 0
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		line = line[i:]
		if len(line) == 0 {
			return dst
		}
		j := 0
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		dst = append(dst, line[:j])
		line = line[j:]
	}
}

// nextLine returns data's first line and the rest.
func nextLine(data []byte) (line, rest []byte) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return data[:i], data[i+1:]
	}
	return data, nil
}

func parseUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return v
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}

func parseFloat(b []byte) float64 {
	v, _ := strconv.ParseFloat(string(b), 64) // does not allocate
	return v
}
