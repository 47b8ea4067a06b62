package router

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Route is how one merchant is reached through nginx.
type Route struct {
	// Merchant is the merchant id: a lowercase letter or digit, then up to
	// 62 lowercase letters, digits or '-' (the spec's merchant id syntax).
	// It names the nginx upstream and the maintenance page file.
	Merchant string
	// Domains are the host names that reach the merchant, each a DNS name
	// of lowercase ASCII letters, digits and '-' (IDNs in punycode),
	// optionally starting with "*." for a wildcard. A domain belongs to
	// one merchant only. CheckDomain tells which names are accepted.
	Domains []string
	// PathPrefix, when set, also routes requests whose path starts with it
	// (on the default server, whatever their Host) to the merchant. It
	// starts with '/', holds only letters, digits and "._~-/", and is
	// neither "/" nor under /__steward. The path is passed on unchanged.
	PathPrefix string
	// Upstream is the port on 127.0.0.1 of the merchant's routed instance;
	// 0 means none, and the merchant then answers with its maintenance
	// page.
	Upstream int
	// Maintenance makes the merchant answer every request with 503, a
	// Retry-After header and its maintenance page, whatever Upstream says.
	Maintenance bool
	// Reason is shown on the maintenance page (HTML-escaped, cut at 500
	// bytes). It must hold no secret: anyone reaching the domain reads it.
	Reason string

	// inject is rendered verbatim into the merchant's server block. Only
	// this package's tests set it, to make a candidate fail nginx -t.
	inject string
}

// merchantRe is the spec's merchant id syntax.
var merchantRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// labelRe is one DNS label.
var labelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// prefixRe is a path prefix: segments of unreserved URL characters.
var prefixRe = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+/?$`)

// maxReason is how much of Route.Reason a maintenance page shows.
const maxReason = 500

// CheckMerchant returns an error unless id is a valid merchant id.
func CheckMerchant(id string) error {
	if !merchantRe.MatchString(id) {
		return fmt.Errorf("invalid merchant id %q: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit", id)
	}
	return nil
}

// CheckDomain returns an error unless d is a domain a Route may carry: a
// DNS name of at most 253 characters, lowercase ASCII labels of letters,
// digits and '-' (not at a label's start or end), at least two labels, an
// optional leading "*." wildcard label. Names with other characters are
// refused rather than escaped, so that no name can carry nginx syntax.
func CheckDomain(d string) error {
	name := strings.TrimPrefix(d, "*.")
	switch {
	case d == "":
		return errors.New("empty domain")
	case len(d) > 253:
		return fmt.Errorf("domain %.40q...: longer than 253 characters", d)
	case strings.ToLower(d) != d:
		return fmt.Errorf("domain %q: use lowercase (%q)", d, strings.ToLower(d))
	case strings.HasSuffix(d, "."):
		return fmt.Errorf("domain %q: drop the trailing dot", d)
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return fmt.Errorf("domain %q: need at least two labels, like example.com", d)
	}
	for _, l := range labels {
		if !labelRe.MatchString(l) {
			return fmt.Errorf("domain %q: label %q is not a DNS label (letters a-z, digits and '-', 1 to 63 characters, no '-' at either end; IDNs in punycode)", d, l)
		}
	}
	return nil
}

// CheckPathPrefix returns an error unless p is a path prefix a Route may
// carry: it starts with '/', has non-empty segments of letters, digits and
// "._~-" (no "." or ".." segment), may end with '/', is not "/" and is not
// under /__steward, which steward keeps for itself.
func CheckPathPrefix(p string) error {
	if !prefixRe.MatchString(p) {
		return fmt.Errorf("path prefix %q: use segments of letters, digits and \"._~-\" after '/', like /shop (not \"/\")", p)
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("path prefix %q: no \".\" or \"..\" segments", p)
		}
	}
	if n := normPrefix(p); n == "/__steward" || strings.HasPrefix(n, "/__steward/") {
		return fmt.Errorf("path prefix %q: /__steward is reserved for steward", p)
	}
	return nil
}

// normPrefix returns p without its trailing '/'.
func normPrefix(p string) string { return strings.TrimSuffix(p, "/") }

// check validates r on its own.
func (r Route) check() error {
	if err := CheckMerchant(r.Merchant); err != nil {
		return err
	}
	for _, d := range r.Domains {
		if err := CheckDomain(d); err != nil {
			return fmt.Errorf("merchant %s: %w", r.Merchant, err)
		}
	}
	if r.PathPrefix != "" {
		if err := CheckPathPrefix(r.PathPrefix); err != nil {
			return fmt.Errorf("merchant %s: %w", r.Merchant, err)
		}
	}
	if r.Upstream < 0 || r.Upstream > 65535 {
		return fmt.Errorf("merchant %s: upstream port %d out of range 0-65535", r.Merchant, r.Upstream)
	}
	return nil
}

// routed reports whether r has anything for nginx to route.
func (r Route) routed() bool { return len(r.Domains) > 0 || r.PathPrefix != "" }

// unavailable reports whether r answers with its maintenance page.
func (r Route) unavailable() bool { return r.Maintenance || r.Upstream == 0 }

// normalize checks every route and returns them sorted by merchant, with
// sorted domains, without routes that route nothing. It refuses a merchant
// listed twice, a domain or path prefix claimed twice, and a path prefix
// when the table has no default server to put it on. Every problem is
// reported, not just the first.
func normalize(routes []Route, defaultServer bool) ([]Route, error) {
	var errs []error
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		if err := r.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		if !r.routed() {
			continue
		}
		r.Domains = slices.Clone(r.Domains)
		slices.Sort(r.Domains)
		r.Domains = slices.Compact(r.Domains)
		if r.PathPrefix != "" {
			r.PathPrefix = normPrefix(r.PathPrefix)
			if !defaultServer {
				errs = append(errs, fmt.Errorf("merchant %s: path prefix %s needs the default server, which this router does not render (NoDefaultServer)", r.Merchant, r.PathPrefix))
				continue
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Merchant, b.Merchant) })
	domains := map[string]string{}
	prefixes := map[string]string{}
	for i, r := range out {
		if i > 0 && out[i-1].Merchant == r.Merchant {
			errs = append(errs, fmt.Errorf("merchant %s: listed twice", r.Merchant))
		}
		for _, d := range r.Domains {
			if other, ok := domains[d]; ok && other != r.Merchant {
				errs = append(errs, fmt.Errorf("domain %s: claimed by merchants %s and %s", d, other, r.Merchant))
			}
			domains[d] = r.Merchant
		}
		if p := r.PathPrefix; p != "" {
			if other, ok := prefixes[p]; ok && other != r.Merchant {
				errs = append(errs, fmt.Errorf("path prefix %s: claimed by merchants %s and %s", p, other, r.Merchant))
			}
			prefixes[p] = r.Merchant
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// portString is strconv.Itoa for ports, for the renderer.
func portString(p int) string { return strconv.Itoa(p) }
