package cloudinit

import (
	"fmt"
	"strings"
)

// Quote quotes s as a JSON string that is also a YAML double-quoted
// string with the same value: beside what JSON must escape, characters
// YAML does not allow raw or reads as line breaks (DEL, C1 controls, NEL,
// U+2028, U+2029, the BOM, U+FFFE, U+FFFF) are written as \uXXXX, which
// both read alike. Invalid UTF-8 becomes U+FFFD.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff, r == 0xfffe, r == 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r) // invalid UTF-8 arrives as U+FFFD
		}
	}
	b.WriteByte('"')
	return b.String()
}
