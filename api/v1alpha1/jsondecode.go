package v1alpha1

import (
	"encoding/json"
	"reflect"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// Every hot decode of objects (a request body, what the store reads, the
// watch feed, a client's lists and watches) goes through here. The
// decoder is github.com/go-json-experiment/json, the json v2 prototype,
// told to behave as encoding/json does (its v1 options): it decodes our
// objects several times faster. It is trusted only where it succeeds:
// anything it refuses is decoded again by encoding/json, so every error,
// and every document it is stricter about (invalid UTF-8), comes out
// exactly as before. Duplicate names it decodes as encoding/json does
// (the last wins, objects and lists merge), which the agreement tests
// check case by case; refusing them instead cost a third of its time.
// Encoding stays encoding/json: what is on the wire and in etcd does not
// change.

var (
	// lenientOptions decode as encoding/json.Unmarshal does (names match
	// without regard to case, unknown names are skipped), except that
	// invalid UTF-8 fails, so encoding/json decides it.
	lenientOptions = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(),
		jsontext.AllowInvalidUTF8(false))
	// exactOptions also require every name to be a field's name exactly:
	// a document they accept is one encoding/json with
	// DisallowUnknownFields accepts, giving the same object.
	exactOptions = jsonv2.JoinOptions(lenientOptions,
		jsonv2.MatchCaseInsensitiveNames(false), jsonv2.RejectUnknownMembers(true))
)

// Unmarshal is encoding/json's Unmarshal: the same result and the same
// error, faster.
func Unmarshal(data []byte, v any) error {
	if UnmarshalFast(data, v) {
		return nil
	}
	return json.Unmarshal(data, v)
}

// UnmarshalFast decodes data into v as encoding/json's Unmarshal would
// when it is sure to give the same result, and reports whether it did.
// On false v is as it was, for the caller's own exact path (which reports
// the error). v must point at a zero value or at an object as its kind's
// New made it; anything else is left to the caller.
func UnmarshalFast(data []byte, v any) bool {
	return decodeWith(data, v, lenientOptions)
}

// DecodeExact decodes data into v when every name in it is a field's name
// exactly, the JSON is valid with nothing after it, and it decodes
// without error: then encoding/json with DisallowUnknownFields gives the
// same object. On false v is as it was; v is as for UnmarshalFast.
func DecodeExact(data []byte, v any) bool {
	return decodeWith(data, v, exactOptions)
}

func decodeWith(data []byte, v any, opts jsonv2.Options) bool {
	reset, ok := fresh(v)
	if !ok {
		return false
	}
	if jsonv2.Unmarshal(data, v, opts) == nil {
		return true
	}
	reset()
	return false
}

// fresh reports whether v points at a zero value, or at an object whose
// only set field is its apiVersion and kind, and returns what puts it
// back so. Only then does "as it was" after a failed decode mean a
// value that can be rebuilt.
func fresh(v any) (reset func(), ok bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, false
	}
	e := rv.Elem()
	if o, isObj := v.(Object); isObj {
		tm := o.GetTypeMeta()
		if tm == nil {
			return nil, false
		}
		saved := *tm
		*tm = TypeMeta{}
		zero := e.IsZero()
		*tm = saved
		if !zero {
			return nil, false
		}
		return func() {
			e.SetZero()
			*o.GetTypeMeta() = saved
		}, true
	}
	if !e.IsZero() {
		return nil, false
	}
	return func() { e.SetZero() }, true
}
