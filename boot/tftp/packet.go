package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcodes (RFC 1350; OACK from RFC 2347).
const (
	opRRQ   uint16 = 1
	opWRQ   uint16 = 2
	opDATA  uint16 = 3
	opACK   uint16 = 4
	opERROR uint16 = 5
	opOACK  uint16 = 6
)

// errorCode is the code carried by an ERROR packet (RFC 1350, RFC 2347).
type errorCode uint16

const (
	errNotDefined      errorCode = 0
	errFileNotFound    errorCode = 1
	errAccessViolation errorCode = 2
	errIllegalOp       errorCode = 4
	errUnknownTID      errorCode = 5
	errOptionRefused   errorCode = 8
)

// option is one name/value pair of a request or an OACK, in wire order.
type option struct {
	name, value string
}

// request is a parsed RRQ or WRQ.
type request struct {
	op       uint16
	filename string   // exactly as sent; cleanPath makes it safe
	mode     string   // lower-cased; not yet checked against the modes we serve
	options  []option // names lower-cased, values as sent
}

var errMalformed = errors.New("malformed request")

// parseRequest parses an RRQ or WRQ:
//
//	opcode(2) filename NUL mode NUL [name NUL value NUL]...
//
// The file name and mode must be present and NUL-terminated. After them the
// parser is lenient, because boot ROMs are not always tidy: empty strings
// (NUL padding) are skipped, and an unterminated or value-less trailing
// option is dropped rather than failing the whole request.
func parseRequest(b []byte) (*request, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short for an opcode", errMalformed, len(b))
	}
	op := binary.BigEndian.Uint16(b)
	if op != opRRQ && op != opWRQ {
		return nil, fmt.Errorf("%w: opcode %d is not a read or write request", errMalformed, op)
	}
	rest := b[2:]
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return "", false
		}
		s := string(rest[:i])
		rest = rest[i+1:]
		return s, true
	}
	filename, ok := next()
	if !ok || filename == "" {
		return nil, fmt.Errorf("%w: file name missing or not NUL-terminated", errMalformed)
	}
	mode, ok := next()
	if !ok || mode == "" {
		return nil, fmt.Errorf("%w: transfer mode missing or not NUL-terminated", errMalformed)
	}
	req := &request{op: op, filename: filename, mode: strings.ToLower(mode)}
	for len(rest) > 0 {
		name, ok := next()
		if !ok {
			break
		}
		if name == "" {
			continue
		}
		value, ok := next()
		if !ok {
			break
		}
		req.options = append(req.options, option{name: strings.ToLower(name), value: value})
	}
	return req, nil
}

// marshal encodes the request; the fuzz test uses it to check parseRequest
// round-trips.
func (r *request) marshal() []byte {
	b := binary.BigEndian.AppendUint16(nil, r.op)
	b = append(append(b, r.filename...), 0)
	b = append(append(b, r.mode...), 0)
	for _, o := range r.options {
		b = append(append(b, o.name...), 0)
		b = append(append(b, o.value...), 0)
	}
	return b
}

func errorPacket(code errorCode, msg string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opERROR)
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(append(b, msg...), 0)
}

func oackPacket(opts []option) []byte {
	b := binary.BigEndian.AppendUint16(nil, opOACK)
	for _, o := range opts {
		b = append(append(b, o.name...), 0)
		b = append(append(b, o.value...), 0)
	}
	return b
}

// parseError decodes the code and message of an ERROR packet (opcode
// already checked).
func parseError(b []byte) (errorCode, string) {
	if len(b) < 4 {
		return errNotDefined, ""
	}
	msg := b[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return errorCode(binary.BigEndian.Uint16(b[2:])), string(msg)
}
