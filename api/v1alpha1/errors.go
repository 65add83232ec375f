package v1alpha1

import (
	"errors"
	"fmt"
	"net/http"
)

// Reason is a machine-readable cause of an API error.
type Reason string

const (
	ReasonNotFound      Reason = "NotFound"
	ReasonAlreadyExists Reason = "AlreadyExists"
	ReasonConflict      Reason = "Conflict"
	ReasonInvalid       Reason = "Invalid"
	ReasonBadRequest    Reason = "BadRequest"
	ReasonUnauthorized  Reason = "Unauthorized"
	ReasonForbidden     Reason = "Forbidden"
	// ReasonGone answers a watch from a resourceVersion etcd has compacted:
	// list again and watch from the list's resourceVersion.
	ReasonGone  Reason = "Gone"
	ReasonQuota Reason = "QuotaExceeded"
	// ReasonTooLarge refuses an upload over the server's limit (413);
	// ReasonInsufficientStorage one that would leave the server's disk,
	// which etcd shares, too full (507).
	ReasonTooLarge            Reason = "RequestEntityTooLarge"
	ReasonInsufficientStorage Reason = "InsufficientStorage"
	ReasonInternal            Reason = "InternalError"
	ReasonUnavailable         Reason = "ServiceUnavailable"
	// ReasonInUse refuses to delete an object that others still hold
	// something of (a subnet whose addresses VMs hold): delete those first.
	ReasonInUse Reason = "InUse"
)

// Status is the body of every API error, and what clients decode them to.
// It is an error itself, so the server, the store and the client pass one
// type around and a 409 means the same thing at every layer.
type Status struct {
	Kind    string      `json:"kind"`
	Code    int         `json:"code"`
	Reason  Reason      `json:"reason"`
	Message string      `json:"message"`
	Fields  FieldErrors `json:"fields,omitempty"`
}

func (s *Status) Error() string { return s.Message }

func newStatus(code int, reason Reason, format string, args ...any) *Status {
	return &Status{Kind: "Status", Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func NewNotFound(kind, tenant, name string) *Status {
	if tenant != "" {
		return newStatus(http.StatusNotFound, ReasonNotFound, "%s %q not found in tenant %q", kind, name, tenant)
	}
	return newStatus(http.StatusNotFound, ReasonNotFound, "%s %q not found", kind, name)
}

func NewAlreadyExists(kind, tenant, name string) *Status {
	if tenant != "" {
		return newStatus(http.StatusConflict, ReasonAlreadyExists, "%s %q already exists in tenant %q", kind, name, tenant)
	}
	return newStatus(http.StatusConflict, ReasonAlreadyExists, "%s %q already exists", kind, name)
}

func NewConflict(kind, name string, want, have int64) *Status {
	return newStatus(http.StatusConflict, ReasonConflict,
		"%s %q was changed since you read it (your resourceVersion %d, now %d): read it again and retry", kind, name, want, have)
}

// NewInUse refuses to delete an object that others still use (409).
func NewInUse(format string, args ...any) *Status {
	return newStatus(http.StatusConflict, ReasonInUse, format, args...)
}

// NewInvalid reports every bad field of an object.
func NewInvalid(kind, name string, es FieldErrors) *Status {
	s := newStatus(http.StatusUnprocessableEntity, ReasonInvalid, "%s %q is invalid: %s", kind, name, es.Error())
	s.Fields = es
	return s
}

func NewBadRequest(format string, args ...any) *Status {
	return newStatus(http.StatusBadRequest, ReasonBadRequest, format, args...)
}

func NewUnauthorized(format string, args ...any) *Status {
	return newStatus(http.StatusUnauthorized, ReasonUnauthorized, format, args...)
}

func NewForbidden(format string, args ...any) *Status {
	return newStatus(http.StatusForbidden, ReasonForbidden, format, args...)
}

func NewGone(format string, args ...any) *Status {
	return newStatus(http.StatusGone, ReasonGone, format, args...)
}

func NewQuotaExceeded(format string, args ...any) *Status {
	return newStatus(http.StatusForbidden, ReasonQuota, format, args...)
}

func NewTooLarge(format string, args ...any) *Status {
	return newStatus(http.StatusRequestEntityTooLarge, ReasonTooLarge, format, args...)
}

func NewInsufficientStorage(format string, args ...any) *Status {
	return newStatus(http.StatusInsufficientStorage, ReasonInsufficientStorage, format, args...)
}

func NewInternal(format string, args ...any) *Status {
	return newStatus(http.StatusInternalServerError, ReasonInternal, format, args...)
}

func NewUnavailable(format string, args ...any) *Status {
	return newStatus(http.StatusServiceUnavailable, ReasonUnavailable, format, args...)
}

// ReasonOf returns the reason of an API error, or "" for other errors.
func ReasonOf(err error) Reason {
	var s *Status
	if errors.As(err, &s) {
		return s.Reason
	}
	return ""
}

// IsNotFound, IsConflict, IsAlreadyExists and IsGone classify API errors.
func IsNotFound(err error) bool      { return ReasonOf(err) == ReasonNotFound }
func IsConflict(err error) bool      { return ReasonOf(err) == ReasonConflict }
func IsAlreadyExists(err error) bool { return ReasonOf(err) == ReasonAlreadyExists }
func IsGone(err error) bool          { return ReasonOf(err) == ReasonGone }
func IsForbidden(err error) bool     { return ReasonOf(err) == ReasonForbidden }

// IsQuotaExceeded reports a write refused for a tenant's quota.
func IsQuotaExceeded(err error) bool { return ReasonOf(err) == ReasonQuota }

// IsInUse reports a delete refused because others still use the object.
func IsInUse(err error) bool { return ReasonOf(err) == ReasonInUse }
