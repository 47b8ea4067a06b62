package router

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// table is the routing table Run applies, indexed so that a route is
// checked against the others when it is put, not at the next apply: one
// bad route must not hold up every other merchant's changes.
type table struct {
	routes   map[string]Route  // by merchant
	domains  map[string]string // domain → merchant
	prefixes map[string]string // normalized path prefix → merchant
}

func newTable() *table {
	return &table{routes: map[string]Route{}, domains: map[string]string{}, prefixes: map[string]string{}}
}

// put checks rt and sets it, replacing the merchant's previous route. An
// invalid route, or one claiming another merchant's domain or prefix,
// changes nothing.
func (t *table) put(rt Route, defaultServer bool) error {
	if err := rt.check(); err != nil {
		return err
	}
	rt.Domains = slices.Compact(slices.Sorted(slices.Values(rt.Domains)))
	rt.PathPrefix = normPrefix(rt.PathPrefix)
	var errs []error
	for _, d := range rt.Domains {
		if m, ok := t.domains[d]; ok && m != rt.Merchant {
			errs = append(errs, fmt.Errorf("merchant %s: domain %s is merchant %s's", rt.Merchant, d, m))
		}
	}
	if p := rt.PathPrefix; p != "" {
		if m, ok := t.prefixes[p]; ok && m != rt.Merchant {
			errs = append(errs, fmt.Errorf("merchant %s: path prefix %s is merchant %s's", rt.Merchant, p, m))
		}
		if !defaultServer {
			errs = append(errs, fmt.Errorf("merchant %s: path prefix %s needs the default server, which this router does not render (NoDefaultServer)", rt.Merchant, p))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	t.delete(rt.Merchant)
	t.routes[rt.Merchant] = rt
	for _, d := range rt.Domains {
		t.domains[d] = rt.Merchant
	}
	if rt.PathPrefix != "" {
		t.prefixes[rt.PathPrefix] = rt.Merchant
	}
	return nil
}

func (t *table) delete(merchant string) {
	old, ok := t.routes[merchant]
	if !ok {
		return
	}
	for _, d := range old.Domains {
		delete(t.domains, d)
	}
	delete(t.prefixes, old.PathPrefix)
	delete(t.routes, merchant)
}

// list returns the routes sorted by merchant.
func (t *table) list() []Route {
	return slices.SortedFunc(maps.Values(t.routes), func(a, b Route) int { return strings.Compare(a.Merchant, b.Merchant) })
}
