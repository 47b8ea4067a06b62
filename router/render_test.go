package router

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// renderRouter returns a Router for rendering only: no nginx is needed,
// and the worker user is fixed so that the output does not depend on who
// runs the test.
func renderRouter(t testing.TB, cfg Config) *Router {
	t.Helper()
	cfg.Binary = "/bin/sh" // rendering never runs it
	if cfg.Mode == Managed && os.Geteuid() == 0 && cfg.User == "" {
		cfg.User = "nobody"
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.user, r.group = "", ""
	return r
}

func goldenRoutes() []Route {
	return []Route{
		{Merchant: "fig", Domains: []string{"fig.example.com"}, PathPrefix: "/fig/", Upstream: 8106},
		{Merchant: "acme", Domains: []string{"www.acme.example.com", "acme.example.com", "acme.example.com"}, Upstream: 8101},
		{Merchant: "bluebird", Domains: []string{"bluebird.example.com"}, Upstream: 8102, Maintenance: true, Reason: `database "db-east" is down <retrying>`},
		{Merchant: "cobalt", PathPrefix: "/cobalt", Upstream: 8103},
		{Merchant: "dune", Domains: []string{"*.dune.example.com"}},
		{Merchant: "emu", Upstream: 8105}, // routes nothing: left out
	}
}

func TestRenderGolden(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"managed.conf", Config{Mode: Managed, Listen: "127.0.0.1:8080", Prefix: "/srv/steward/run/router", RetryAfter: 20, ProxyReadTimeout: 90 * time.Second, ProxyConnectTimeout: 1500 * time.Millisecond}},
		{"system.conf", Config{Mode: System, Listen: "80", IncludeFile: "/etc/nginx/conf.d/steward.conf"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := renderRouter(t, c.cfg)
			r.user, r.group = "www-data", "www-data"
			if c.cfg.Mode == System {
				r.user, r.group = "", ""
			}
			got, err := r.Render(goldenRoutes())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name+".golden", got)
			// Any order renders the same bytes.
			rs := goldenRoutes()
			for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
				rs[i], rs[j] = rs[j], rs[i]
			}
			again, err := r.Render(rs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, again) {
				t.Error("rendering depends on the order of the routes")
			}
		})
	}
}

func TestRenderPages(t *testing.T) {
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router", RetryAfter: 20})
	rd, err := r.render(goldenRoutes())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bluebird.html.golden", rd.pages["bluebird.html"])
	if !bytes.Contains(rd.pages["acme.html"], []byte("restarting")) {
		t.Errorf("the page of a merchant that is not in maintenance should say it is restarting:\n%s", rd.pages["acme.html"])
	}
	if _, ok := rd.pages["emu.html"]; ok {
		t.Error("a merchant without domains or prefix got a page")
	}
	long := Route{Merchant: "long", Domains: []string{"long.example.com"}, Maintenance: true, Reason: strings.Repeat("x", 2000)}
	rd, err = r.render([]Route{long})
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(rd.pages["long.html"], []byte("x")); n > maxReason+5 {
		t.Errorf("reason not cut: %d x's on the page", n)
	}
}

func TestRenderCustomPage(t *testing.T) {
	page := filepath.Join(t.TempDir(), "page.html")
	os.WriteFile(page, []byte(`<p>{{.Merchant}} away: {{.Reason}} ({{.RetryAfter}}s)</p>`), 0o644)
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router", MaintenancePage: page})
	rd, err := r.render([]Route{{Merchant: "acme", Domains: []string{"acme.example.com"}, Maintenance: true, Reason: "<b>moving</b>"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(rd.pages["acme.html"]), "<p>acme away: &lt;b&gt;moving&lt;/b&gt; (30s)</p>"; got != want {
		t.Errorf("page = %q, want %q", got, want)
	}
	os.WriteFile(page, []byte(`{{.Nope`), 0o644)
	if _, err := New(Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router", MaintenancePage: page, Binary: "/bin/sh", User: "nobody"}); err == nil || !strings.Contains(err.Error(), page) {
		t.Errorf("a broken page template should be refused naming the file, got %v", err)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./router -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendering (go test ./router -update rewrites it after review):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first differing lines.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + itoa(i+1) + ":\n- " + a + "\n+ " + b
		}
	}
	return ""
}

func itoa(i int) string { return portString(i) }

// Names from specs must never carry nginx syntax: they are refused, not
// escaped.
func TestRenderRefusesHostileNames(t *testing.T) {
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router"})
	base := Route{Merchant: "acme", Domains: []string{"acme.example.com"}, Upstream: 8101}
	cases := []struct {
		name string
		edit func(*Route)
		want string
	}{
		{"semicolon in domain", func(r *Route) { r.Domains = []string{"a.example.com; return 200 x"} }, "not a DNS label"},
		{"brace in domain", func(r *Route) { r.Domains = []string{"a.example.com}server{"} }, "not a DNS label"},
		{"newline in domain", func(r *Route) { r.Domains = []string{"a.example.com\nlocation / {"} }, "not a DNS label"},
		{"dollar in domain", func(r *Route) { r.Domains = []string{"$host.example.com"} }, "not a DNS label"},
		{"quote in domain", func(r *Route) { r.Domains = []string{`a".example.com`} }, "not a DNS label"},
		{"single quote in domain", func(r *Route) { r.Domains = []string{`a'.example.com`} }, "not a DNS label"},
		{"space in domain", func(r *Route) { r.Domains = []string{"a.example.com b.example.com"} }, "not a DNS label"},
		{"hash in domain", func(r *Route) { r.Domains = []string{"a.example.com#"} }, "not a DNS label"},
		{"backslash in domain", func(r *Route) { r.Domains = []string{`a\.example.com`} }, "not a DNS label"},
		{"regex domain", func(r *Route) { r.Domains = []string{"~^.*$"} }, "not a DNS label"},
		{"uppercase domain", func(r *Route) { r.Domains = []string{"Acme.example.com"} }, "lowercase"},
		{"single label", func(r *Route) { r.Domains = []string{"localhost"} }, "two labels"},
		{"trailing dot", func(r *Route) { r.Domains = []string{"acme.example.com."} }, "trailing dot"},
		{"empty domain", func(r *Route) { r.Domains = []string{""} }, "empty domain"},
		{"hyphen edge", func(r *Route) { r.Domains = []string{"-a.example.com"} }, "not a DNS label"},
		{"inner wildcard", func(r *Route) { r.Domains = []string{"a.*.example.com"} }, "not a DNS label"},
		{"too long", func(r *Route) { r.Domains = []string{strings.Repeat("a.", 127) + "com"} }, "longer than 253"},
		{"semicolon in prefix", func(r *Route) { r.PathPrefix = "/shop;return 200" }, "path prefix"},
		{"brace in prefix", func(r *Route) { r.PathPrefix = "/shop{" }, "path prefix"},
		{"newline in prefix", func(r *Route) { r.PathPrefix = "/shop\n}" }, "path prefix"},
		{"dollar in prefix", func(r *Route) { r.PathPrefix = "/$uri" }, "path prefix"},
		{"quote in prefix", func(r *Route) { r.PathPrefix = `/"shop"` }, "path prefix"},
		{"space in prefix", func(r *Route) { r.PathPrefix = "/sh op" }, "path prefix"},
		{"relative prefix", func(r *Route) { r.PathPrefix = "shop" }, "path prefix"},
		{"root prefix", func(r *Route) { r.PathPrefix = "/" }, "path prefix"},
		{"double slash", func(r *Route) { r.PathPrefix = "//shop" }, "path prefix"},
		{"dotdot", func(r *Route) { r.PathPrefix = "/a/../b" }, "segments"},
		{"reserved", func(r *Route) { r.PathPrefix = "/__steward/x" }, "reserved"},
		{"merchant with semicolon", func(r *Route) { r.Merchant = "acme;" }, "invalid merchant id"},
		{"merchant with brace", func(r *Route) { r.Merchant = "a}b" }, "invalid merchant id"},
		{"merchant with slash", func(r *Route) { r.Merchant = "../etc" }, "invalid merchant id"},
		{"port out of range", func(r *Route) { r.Upstream = 70000 }, "out of range"},
		{"negative port", func(r *Route) { r.Upstream = -1 }, "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := base
			rt.Domains = append([]string(nil), base.Domains...)
			c.edit(&rt)
			out, err := r.Render([]Route{rt})
			if err == nil {
				t.Fatalf("accepted; rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestRenderRefusesConflicts(t *testing.T) {
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router"})
	cases := []struct {
		name   string
		routes []Route
		want   []string
	}{
		{"domain twice", []Route{
			{Merchant: "a", Domains: []string{"x.example.com"}, Upstream: 1},
			{Merchant: "b", Domains: []string{"x.example.com"}, Upstream: 2},
		}, []string{"domain x.example.com: claimed by merchants a and b"}},
		{"prefix twice", []Route{
			{Merchant: "a", PathPrefix: "/x/", Upstream: 1},
			{Merchant: "b", PathPrefix: "/x", Upstream: 2},
		}, []string{"path prefix /x: claimed by merchants a and b"}},
		{"merchant twice", []Route{
			{Merchant: "a", Domains: []string{"a.example.com"}, Upstream: 1},
			{Merchant: "a", Domains: []string{"b.example.com"}, Upstream: 2},
		}, []string{"merchant a: listed twice"}},
		{"every problem named", []Route{
			{Merchant: "a", Domains: []string{"a;.example.com"}, Upstream: 1},
			{Merchant: "b", PathPrefix: "/b{", Upstream: 2},
		}, []string{"merchant a: domain", "merchant b: path prefix"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Render(c.routes)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	sys := renderRouter(t, Config{Mode: System, IncludeFile: "/etc/nginx/conf.d/steward.conf", NoDefaultServer: true})
	if _, err := sys.Render([]Route{{Merchant: "a", PathPrefix: "/a", Upstream: 1}}); err == nil || !strings.Contains(err.Error(), "NoDefaultServer") {
		t.Errorf("a path prefix without a default server should be refused, got %v", err)
	}
	out, err := sys.Render([]Route{{Merchant: "a", Domains: []string{"a.example.com"}, Upstream: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("default_server")) {
		t.Error("NoDefaultServer rendered a default server")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no mode", Config{}, "mode"},
		{"managed without listen", Config{Mode: Managed, Prefix: "/srv/r"}, "listen address"},
		{"managed without prefix", Config{Mode: Managed, Listen: "8080"}, "prefix"},
		{"relative prefix", Config{Mode: Managed, Listen: "8080", Prefix: "run/router"}, "absolute path"},
		{"prefix with semicolon", Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r;x"}, "absolute path"},
		{"prefix with space", Config{Mode: Managed, Listen: "8080", Prefix: "/srv/my router"}, "absolute path"},
		{"bad listen", Config{Mode: Managed, Listen: "8080; x", Prefix: "/srv/r"}, "listen"},
		{"system without include", Config{Mode: System}, "include file"},
		{"control not loopback", Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r", Control: "0.0.0.0:9000"}, "loopback"},
		{"control equals listen", Config{Mode: Managed, Listen: "127.0.0.1:8080", Prefix: "/srv/r", Control: "127.0.0.1:8080"}, "differ"},
		{"control socket too long", Config{Mode: Managed, Listen: "8080", Prefix: "/" + strings.Repeat("d", 120)}, "longer than"},
		{"missing binary", Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r", Binary: "/nonexistent/nginx"}, "install nginx"},
		{"sub-millisecond timeout", Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r", ProxyReadTimeout: time.Microsecond}, "at least 1ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.Binary == "" {
				c.cfg.Binary = "/bin/sh"
			}
			c.cfg.User = "nobody"
			_, err := New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New = %v, want an error saying %q", err, c.want)
			}
		})
	}
	if os.Geteuid() == 0 {
		_, err := New(Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r", Binary: "/bin/sh"})
		if err == nil || !strings.Contains(err.Error(), "unprivileged user") {
			t.Errorf("as root without a user: %v", err)
		}
		_, err = New(Config{Mode: Managed, Listen: "8080", Prefix: "/srv/r", Binary: "/bin/sh", User: "root"})
		if err == nil || !strings.Contains(err.Error(), "is root") {
			t.Errorf("as root with user root: %v", err)
		}
	}
}

func TestGenerationOf(t *testing.T) {
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router"})
	rd, err := r.render(goldenRoutes())
	if err != nil {
		t.Fatal(err)
	}
	if got := generationOf(rd.conf); got != rd.gen || len(got) != 16 {
		t.Errorf("generationOf = %q, want %q", got, rd.gen)
	}
	rd2, _ := r.render(goldenRoutes()[:2])
	if rd2.gen == rd.gen {
		t.Error("different routing, same generation")
	}
	if generationOf([]byte("events {}")) != "" {
		t.Error("a generation found in a file without one")
	}
}

// FuzzRenderStructure checks that whatever a spec puts in a domain or a
// path prefix, an accepted route renders with exactly the nginx structure
// of a plain one: the same number of lines, blocks, directives, quotes,
// variables and comments. A name that smuggled in syntax would change one
// of these counts.
func FuzzRenderStructure(f *testing.F) {
	for _, s := range []string{"a.example.com", "*.example.com", "a;b.example.com", "x}.example.com", "a\n.example.com", "$host.example.com", `a".example.com`, "xn--bcher-kva.example", "/shop", "/a/b/", "/$x", "/a;b", "/a\nb", "/a{b}", `/a"b`, "/a#b"} {
		f.Add(s, "/p")
		f.Add("a.example.com", s)
	}
	r := renderRouter(f, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router"})
	refs := map[bool][]byte{} // by whether there is a prefix
	for _, p := range []string{"", "/ref"} {
		ref, err := r.Render([]Route{{Merchant: "m", Domains: []string{"ref.example.com"}, PathPrefix: p, Upstream: 1}})
		if err != nil {
			f.Fatal(err)
		}
		refs[p != ""] = ref
	}
	f.Fuzz(func(t *testing.T, domain, prefix string) {
		out, err := r.Render([]Route{{Merchant: "m", Domains: []string{domain}, PathPrefix: prefix, Upstream: 1}})
		if err != nil {
			return
		}
		ref := refs[prefix != ""]
		for _, c := range []string{"\n", "{", "}", ";", `"`, "'", "$", "#", `\`, " "} {
			if a, b := strings.Count(string(ref), c), strings.Count(string(out), c); a != b {
				t.Fatalf("domain %q, prefix %q: %d %q in the rendering, %d in the reference", domain, prefix, b, c, a)
			}
		}
	})
}

func TestTableRefusesBadRoutes(t *testing.T) {
	r := renderRouter(t, Config{Mode: Managed, Listen: "8080", Prefix: "/srv/router"})
	if err := r.Set([]Route{
		{Merchant: "a", Domains: []string{"a.example.com"}, Upstream: 1},
		{Merchant: "b", Domains: []string{"b.example.com"}, PathPrefix: "/b/", Upstream: 2},
	}); err != nil {
		t.Fatal(err)
	}
	seq := r.seq
	refused := []struct {
		name string
		rt   Route
		want string
	}{
		{"invalid domain", Route{Merchant: "c", Domains: []string{"c;.example.com"}, Upstream: 3}, "not a DNS label"},
		{"another's domain", Route{Merchant: "c", Domains: []string{"c.example.com", "a.example.com"}, Upstream: 3}, "domain a.example.com is merchant a's"},
		{"another's prefix", Route{Merchant: "c", PathPrefix: "/b", Upstream: 3}, "path prefix /b is merchant b's"},
		{"invalid merchant", Route{Merchant: "C", Domains: []string{"c.example.com"}, Upstream: 3}, "invalid merchant id"},
	}
	for _, c := range refused {
		if err := r.Put(c.rt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Put = %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if r.seq != seq || len(r.Routes()) != 2 {
		t.Errorf("refused routes changed the table: %v", r.Routes())
	}
	// A merchant moving its own domains releases the old ones.
	if err := r.Put(Route{Merchant: "a", Domains: []string{"new-a.example.com"}, Upstream: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(Route{Merchant: "c", Domains: []string{"a.example.com"}, PathPrefix: "/c", Upstream: 3}); err != nil {
		t.Errorf("a released domain cannot be taken: %v", err)
	}
	r.Delete("b")
	if err := r.Put(Route{Merchant: "d", PathPrefix: "/b", Upstream: 4}); err != nil {
		t.Errorf("a deleted merchant's prefix cannot be taken: %v", err)
	}
	// Set refuses a whole table with any problem, naming all of them.
	before := r.Routes()
	err := r.Set([]Route{
		{Merchant: "x", Domains: []string{"x.example.com"}, Upstream: 1},
		{Merchant: "x", Domains: []string{"y.example.com"}, Upstream: 2},
		{Merchant: "z", Domains: []string{"x.example.com"}, Upstream: 3},
	})
	if err == nil || !strings.Contains(err.Error(), "listed twice") || !strings.Contains(err.Error(), "merchant x's") {
		t.Errorf("Set of a bad table = %v", err)
	}
	if got := r.Routes(); len(got) != len(before) {
		t.Errorf("a refused Set changed the table: %v", got)
	}
	sys := renderRouter(t, Config{Mode: System, IncludeFile: "/etc/nginx/conf.d/steward.conf", NoDefaultServer: true})
	if err := sys.Put(Route{Merchant: "a", PathPrefix: "/a", Upstream: 1}); err == nil {
		t.Error("a path prefix without a default server was put")
	}
}
