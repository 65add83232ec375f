package v1alpha1

import (
	"net/url"
	"strconv"
)

// LogOptions choose what a read of a VM's serial console log returns; the
// zero value reads the whole log. They travel as query parameters (follow,
// tail, tailLines) from the client to the API server, and from the server
// to the agent of the VM's host, which read them alike
// (ParseLogOptions).
type LogOptions struct {
	// Follow streams new output until the reader goes or the VM does.
	Follow bool
	// TailLines, if set, reads only the last this many lines (a last line
	// without a newline counts; 0 reads none, to follow only what comes
	// next).
	TailLines *int64
	// TailBytes, if set, reads only the last this many bytes. Set at most
	// one of the two.
	TailBytes *int64
}

// Query returns the options as query parameters: none for the zero value.
func (o LogOptions) Query() url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.TailBytes != nil {
		q.Set("tail", strconv.FormatInt(*o.TailBytes, 10))
	}
	if o.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*o.TailLines, 10))
	}
	return q
}

// ParseLogOptions reads the query parameters of a log read: follow (1,
// true, 0 or false), tail (bytes) and tailLines (lines), each at least 0,
// and not both of the last two. Errors are 400s naming the parameter.
func ParseLogOptions(q url.Values) (LogOptions, error) {
	var o LogOptions
	if s := q.Get("follow"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return o, NewBadRequest("follow=%q: want 1, true, 0 or false", s)
		}
		o.Follow = b
	}
	count := func(name, unit string) (*int64, error) {
		s := q.Get(name)
		if s == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return nil, NewBadRequest("%s=%q: want a number of %s, 0 or more", name, s, unit)
		}
		return &n, nil
	}
	var err error
	if o.TailBytes, err = count("tail", "bytes"); err != nil {
		return o, err
	}
	if o.TailLines, err = count("tailLines", "lines"); err != nil {
		return o, err
	}
	if o.TailBytes != nil && o.TailLines != nil {
		return o, NewBadRequest("give tail (bytes) or tailLines, not both")
	}
	return o, nil
}
