package v1alpha1

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bytes is a size in bytes written the way people write sizes: "512Mi",
// "20Gi", "1T", or a plain number of bytes. It is stored and shown in the
// largest binary unit that divides it exactly.
type Bytes int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ei", 1 << 60}, {"Pi", 1 << 50}, {"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10},
	{"E", 1e18}, {"P", 1e15}, {"T", 1e12}, {"G", 1e9}, {"M", 1e6}, {"K", 1e3}, {"k", 1e3},
}

// ParseBytes parses a size such as "4Gi", "1.5G" or "1048576".
func ParseBytes(s string) (Bytes, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	num := s
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.mult, strings.TrimSuffix(s, u.suffix)
			break
		}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q is negative", s)
		}
		if mult > 1 && n > (1<<63-1)/mult {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return Bytes(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a size (want a number with an optional unit such as Mi, Gi, G)", s)
	}
	// A float past int64 would convert to a negative size, which a quota
	// would count as room.
	if v := f * float64(mult); v < math.MaxInt64 {
		return Bytes(v), nil
	}
	return 0, fmt.Errorf("%q is too large", s)
}

// String writes b in the largest binary unit that divides it exactly.
func (b Bytes) String() string {
	for _, u := range byteUnits[:6] {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Human writes b rounded for people to read: "23.5Gi", "512Mi", "900".
func (b Bytes) Human() string {
	for _, u := range byteUnits[:6] {
		if int64(b) >= u.mult {
			v := float64(b) / float64(u.mult)
			if v >= 100 || v == float64(int64(v)) {
				return strconv.FormatFloat(v, 'f', 0, 64) + u.suffix
			}
			return strconv.FormatFloat(v, 'f', 1, 64) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// GiB returns the size in whole GiB, rounded up.
func (b Bytes) GiB() int64 { return (int64(b) + (1<<30 - 1)) >> 30 }

func (b Bytes) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

func (b *Bytes) UnmarshalJSON(data []byte) error {
	// The common forms, a plain number or a string without escapes, are
	// read without encoding/json, which is most of the cost of decoding
	// a size; anything else takes the general path below.
	if len(data) > 0 && data[0] >= '1' && data[0] <= '9' || len(data) == 1 && data[0] == '0' {
		if n, err := strconv.ParseInt(string(data), 10, 64); err == nil {
			*b = Bytes(n)
			return nil
		}
	} else if s, ok := plainJSONString(data); ok {
		v, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*b = v
		return nil
	}
	var n int64
	if err := json.Unmarshal(data, &n); err == nil {
		if n < 0 {
			return fmt.Errorf("size %d is negative", n)
		}
		*b = Bytes(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("a size must be a string such as \"4Gi\" or a number of bytes")
	}
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// plainJSONString returns the text of a JSON string that needs no
// unescaping: quotes around printable ASCII other than a backslash.
func plainJSONString(data []byte) (string, bool) {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return "", false
	}
	for _, c := range data[1 : len(data)-1] {
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '"' {
			return "", false
		}
	}
	return string(data[1 : len(data)-1]), true
}
