package server

import (
	"net/http"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// DryRunAll is the one value of the dryRun query parameter, as in
// Kubernetes: every stage of the write runs (authorization, defaults,
// validation, admission, the store's conditions) and nothing is written.
const DryRunAll = "All"

// withDryRun reads the dryRun parameter of a write and, when it asks for
// one, returns the request with a context in which the store writes
// nothing (store.WithDryRun).
func withDryRun(r *http.Request) (*http.Request, error) {
	vals, ok := r.URL.Query()["dryRun"]
	if !ok {
		return r, nil
	}
	for _, v := range vals {
		if v != DryRunAll {
			return nil, api.NewBadRequest("dryRun=%q: the only value is %s (run every check, write nothing)", v, DryRunAll)
		}
	}
	return r.WithContext(store.WithDryRun(r.Context())), nil
}
