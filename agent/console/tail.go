package console

import (
	"io"
	"os"
)

// tailChunk is how much of a log is read at a time looking for lines from
// its end.
const tailChunk = 64 << 10

// linesTail returns how many bytes from the end of the logs (prev, then f,
// of the sizes given; either may be nil) hold their last n lines, as
// tail(1) counts them: a last line without a newline is a line, and the
// newline that ends the log does not start another.
func linesTail(prev *os.File, prevSize int64, f *os.File, size, n int64) (int64, error) {
	total := prevSize + size
	if n == 0 || total == 0 {
		return 0, nil
	}
	readAt := func(p []byte, off int64) error {
		for len(p) > 0 {
			file, at, limit := f, off-prevSize, int64(len(p))
			if off < prevSize {
				file, at, limit = prev, off, min(limit, prevSize-off)
			}
			m, err := file.ReadAt(p[:limit], at)
			if m == 0 && err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // shrunk meanwhile
				}
				return err
			}
			p, off = p[m:], off+int64(m)
		}
		return nil
	}
	buf := make([]byte, tailChunk)
	end := total
	// The log's own final newline ends the last line; it starts none.
	var last [1]byte
	if err := readAt(last[:], total-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	var seen int64
	for pos := end; pos > 0; {
		start := max(0, pos-tailChunk)
		chunk := buf[:pos-start]
		if err := readAt(chunk, start); err != nil {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] == '\n' {
				seen++
				if seen == n {
					return total - (start + int64(i) + 1), nil
				}
			}
		}
		pos = start
	}
	return total, nil
}
