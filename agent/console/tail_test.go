package console

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLinesTail counts lines from the end as tail(1) does, across the kept
// log and the log, and across the chunks it reads them in.
func TestLinesTail(t *testing.T) {
	long := strings.Repeat(strings.Repeat("x", 1000)+"\n", 200) // > 3 chunks
	tests := []struct {
		prev, cur string
		n         int64
		want      string
	}{
		{"", "", 3, ""},
		{"", "a\nb\nc\n", 0, ""},
		{"", "a\nb\nc\n", 1, "c\n"},
		{"", "a\nb\nc\n", 2, "b\nc\n"},
		{"", "a\nb\nc", 1, "c"},
		{"", "a\nb\nc", 3, "a\nb\nc"},
		{"", "a\nb\nc", 4, "a\nb\nc"},
		{"", "\n\n\n", 2, "\n\n"},
		{"a\nb\n", "c\nd", 3, "b\nc\nd"},
		{"a\nb", "c\nd", 2, "bc\nd"}, // a line split by the rotation
		{"a\nb\n", "", 1, "b\n"},
		{"", long + "tail", 2, strings.Repeat("x", 1000) + "\ntail"},
		{long, long, 150, strings.Repeat(strings.Repeat("x", 1000)+"\n", 150)},
		{long, "end\n", 202, long + "end\n"}, // 201 lines: all of them
	}
	for i, tt := range tests {
		dir := t.TempDir()
		open := func(name, content string) (*os.File, int64) {
			if content == "" {
				return nil, 0
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f, int64(len(content))
		}
		pf, ps := open("prev", tt.prev)
		cf, cs := open("cur", tt.cur)
		got, err := linesTail(pf, ps, cf, cs, tt.n)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		all := tt.prev + tt.cur
		if s := all[int64(len(all))-got:]; s != tt.want {
			t.Errorf("case %d (%d lines of %q+%q): got %q, want %q", i, tt.n, short(tt.prev), short(tt.cur), short(s), short(tt.want))
		}
	}
}

func short(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%s…(%d bytes)", s[:20], len(s))
	}
	return s
}
