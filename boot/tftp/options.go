package tftp

import (
	"strconv"
	"time"
)

// Limits of the negotiated options.
const (
	defaultBlockSize = 512   // RFC 1350
	minBlockSize     = 8     // RFC 2348
	maxBlockSize     = 65464 // RFC 2348
	maxTimeoutSecs   = 255   // RFC 2349
	maxWindowSize    = 65535 // RFC 7440

	// maxWindowBytes bounds the memory a transfer holds for blocks sent but
	// not yet acknowledged (windowsize × blksize), so one client cannot make
	// the server buffer 65535 × 65464 bytes. It still allows windows of
	// 178 blocks of 1468 bytes, far past where larger windows stop helping.
	maxWindowBytes = 256 << 10
)

// params are the settings of one transfer after option negotiation.
type params struct {
	blockSize  int
	windowSize int
	timeout    time.Duration // per-packet retransmission timeout
	oack       []option      // what to acknowledge; empty means no OACK, start with DATA 1
}

// negotiate decides the transfer settings from the request's options
// (RFC 2347). Unknown options and options with values out of range are
// ignored, not refused: a firmware that asks for something odd still boots
// with the defaults. The OACK lists accepted options in the client's order.
//
//   - blksize (RFC 2348): 8..65464; larger requests get 65464.
//   - tsize (RFC 2349): answered with size when size >= 0 (not for netascii,
//     whose size on the wire is only known after conversion). The value the
//     client sent is ignored.
//   - timeout (RFC 2349): 1..255 seconds, echoed back (the RFC allows only
//     the client's value or no answer); it replaces Server.Timeout.
//   - windowsize (RFC 7440): 1..65535, lowered so windowsize × blksize stays
//     within maxWindowBytes (the RFC lets the server answer a smaller value).
//
// The first occurrence of a repeated option wins.
func negotiate(opts []option, size int64, defaultTimeout time.Duration) params {
	p := params{blockSize: defaultBlockSize, windowSize: 1, timeout: defaultTimeout}
	accepted := map[string]bool{}
	for _, o := range opts {
		if accepted[o.name] {
			continue
		}
		if o.name == "tsize" {
			// The value of tsize in a read request should be 0 and means
			// nothing; atftp's "tsize enable" sends "enable". Accept any.
			if size >= 0 {
				accepted[o.name] = true
			}
			continue
		}
		v, err := strconv.ParseInt(o.value, 10, 64)
		if err != nil {
			continue
		}
		switch o.name {
		case "blksize":
			if v < minBlockSize {
				continue
			}
			p.blockSize = int(min(v, maxBlockSize))
		case "timeout":
			if v < 1 || v > maxTimeoutSecs {
				continue
			}
			p.timeout = time.Duration(v) * time.Second
		case "windowsize":
			if v < 1 || v > maxWindowSize {
				continue
			}
			p.windowSize = int(v)
		default:
			continue
		}
		accepted[o.name] = true
	}
	p.windowSize = max(1, min(p.windowSize, maxWindowBytes/p.blockSize))

	for _, o := range opts {
		if !accepted[o.name] {
			continue
		}
		delete(accepted, o.name) // answer each option once
		var v string
		switch o.name {
		case "blksize":
			v = strconv.Itoa(p.blockSize)
		case "tsize":
			v = strconv.FormatInt(size, 10)
		case "timeout":
			v = strconv.Itoa(int(p.timeout / time.Second))
		case "windowsize":
			v = strconv.Itoa(p.windowSize)
		}
		p.oack = append(p.oack, option{name: o.name, value: v})
	}
	return p
}
