package controllers

import "sync"

// keyIndex answers "which objects name this one?" without walking a
// cache: each object (by key) is filed under the names it holds now (an
// owner, a tenant, a volume, …), and set replaces its entries when it
// changes. Controllers keep one per question, fed from informer events,
// so that a change costs the objects it concerns, not every object.
type keyIndex struct {
	mu    sync.Mutex
	under map[string]map[string]struct{} // name → keys filed under it
	names map[string][]string            // key → its names
}

// set files key under names, and under nothing else (none: it is gone).
func (x *keyIndex) set(key string, names []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.under == nil {
		x.under, x.names = map[string]map[string]struct{}{}, map[string][]string{}
	}
	for _, n := range x.names[key] {
		if set := x.under[n]; set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(x.under, n)
			}
		}
	}
	if len(names) == 0 {
		delete(x.names, key)
		return
	}
	x.names[key] = names
	for _, n := range names {
		set := x.under[n]
		if set == nil {
			set = map[string]struct{}{}
			x.under[n] = set
		}
		set[key] = struct{}{}
	}
}

// keys returns the keys filed under name.
func (x *keyIndex) keys(name string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.under[name]))
	for k := range x.under[name] {
		out = append(out, k)
	}
	return out
}

// namesOf returns the names key is filed under.
func (x *keyIndex) namesOf(key string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.names[key]...)
}
