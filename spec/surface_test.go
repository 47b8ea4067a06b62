package spec

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRestartBlock(t *testing.T) {
	fl, errs := load(t, base)
	if errs != "no diagnostics" || fl.Restart != DefaultRestart || DefaultRestart != (RestartBackoff{time.Second, 5 * time.Minute, 10 * time.Minute}) {
		t.Fatalf("defaults: %+v %s", fl.Restart, errs)
	}
	fl, errs = load(t, base+`
restart {
  initial_delay = "10ms"
  max_delay     = "2s"
  reset_after   = "5s"
}`)
	if errs != "no diagnostics" || fl.Restart != (RestartBackoff{10 * time.Millisecond, 2 * time.Second, 5 * time.Second}) {
		t.Errorf("restart = %+v, %s", fl.Restart, errs)
	}
	fl, _ = load(t, base+`restart { max_delay = "1m" }`)
	if fl.Restart != (RestartBackoff{time.Second, time.Minute, 10 * time.Minute}) {
		t.Errorf("partial restart block = %+v", fl.Restart)
	}
	for src, want := range map[string]string{
		`restart { initial_delay = "2m" }` + "\n" + `restart { max_delay = "1m" }`: "Only one restart block is allowed",
		`restart { initial_delay = "6m" }`:                                         "initial_delay (6m0s) must not be longer than max_delay (5m0s)",
		`restart { initial_delay = "9ms" }`:                                        "initial_delay must be at least 10ms; got 9ms",
		`restart { reset_after = "0s" }`:                                           "reset_after must be at least 10ms",
		`restart { jitter = "1s" }`:                                                `An argument named "jitter" is not expected here`,
	} {
		if _, errs := load(t, base+src); !strings.Contains(errs, want) {
			t.Errorf("%s: %s, want %q", src, errs, want)
		}
	}
}

func TestRouterConfig(t *testing.T) {
	h, _, diags := LoadHostBytes([]byte(`
api { listen = "127.0.0.1:7070" }
router {
  nginx {
    listen           = "127.0.0.1:8080"
    binary           = "bin/nginx"
    maintenance_page = "maintenance.html"
  }
}
`), "/etc/steward/steward.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := NginxConfig{Mode: RouterManaged, Listen: "127.0.0.1:8080", Binary: "/etc/steward/bin/nginx",
		TestCommand: []string{"/etc/steward/bin/nginx", "-t"}, ReloadCommand: []string{"/etc/steward/bin/nginx", "-s", "reload"},
		MaintenancePage: "/etc/steward/maintenance.html", RetryAfter: 30 * time.Second, ProxyConnectTimeout: 2 * time.Second, ProxyReadTimeout: time.Minute}
	if h.Router == nil || !nginxEqual(h.Router.Nginx, want) {
		t.Errorf("managed router = %+v\nwant %+v", h.Router, want)
	}
	if got := h.ReservedPorts(); len(got) != 2 || got[7070] != "api.listen" || got[8080] != "router.nginx.listen" {
		t.Errorf("ReservedPorts = %v", got)
	}

	h, _, diags = LoadHostBytes([]byte(`
router {
  nginx {
    mode                  = "system"
    include_file          = "conf.d/steward.conf"
    test_command          = ["sudo", "nginx", "-t"]
    retry_after           = "5s"
    proxy_connect_timeout = "500ms"
  }
}
`), "/etc/steward/steward.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	n := h.Router.Nginx
	if n.Mode != RouterSystem || n.IncludeFile != "/etc/steward/conf.d/steward.conf" || n.Binary != "nginx" || n.Listen != "" ||
		!slices.Equal(n.TestCommand, []string{"sudo", "nginx", "-t"}) || !slices.Equal(n.ReloadCommand, []string{"nginx", "-s", "reload"}) ||
		n.RetryAfter != 5*time.Second || n.ProxyConnectTimeout != 500*time.Millisecond || n.MaintenancePage != "" {
		t.Errorf("system router = %+v", n)
	}
	if got := h.ReservedPorts(); len(got) != 1 {
		t.Errorf("a system nginx without listen reserves nothing: %v", got)
	}

	h, _, _ = LoadHostBytes(nil, "/etc/steward/steward.hcl")
	if h.Router != nil {
		t.Errorf("without a router block: %+v", h.Router)
	}
}

func nginxEqual(a, b NginxConfig) bool {
	return slices.Equal(a.TestCommand, b.TestCommand) && slices.Equal(a.ReloadCommand, b.ReloadCommand) &&
		a.Mode == b.Mode && a.Listen == b.Listen && a.Binary == b.Binary && a.IncludeFile == b.IncludeFile &&
		a.MaintenancePage == b.MaintenancePage && a.RetryAfter == b.RetryAfter &&
		a.ProxyConnectTimeout == b.ProxyConnectTimeout && a.ProxyReadTimeout == b.ProxyReadTimeout
}

func TestDomainsAndPathPrefix(t *testing.T) {
	t.Setenv("S_DOMAIN", "secret.example.com")
	fl, errs := load(t, base+`
merchant "acme" {
  package     = "app"
  channel     = "stable"
  domains     = ["acme.example.com", "*.acme.example.com", "localhost", "xn--bcher-kva.example", "a-1.b2.example"]
  path_prefix = "/acme/v1.2_x~y-z/"
}
merchant "bravo" {
  package = "app"
  channel = "stable"
  domains = [env("S_DOMAIN")]
}
merchant "plain" {
  package = "app"
  channel = "stable"
}
`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	a := fl.Merchants["acme"]
	if !slices.Equal(a.Domains, []string{"acme.example.com", "*.acme.example.com", "localhost", "xn--bcher-kva.example", "a-1.b2.example"}) || a.PathPrefix != "/acme/v1.2_x~y-z/" {
		t.Errorf("acme: %q %q", a.Domains, a.PathPrefix)
	}
	if b := fl.Merchants["bravo"]; !b.SensitiveFields["domains"] || b.Domains[0] != "secret.example.com" {
		t.Errorf("bravo: %v %v", b.Domains, b.SensitiveFields)
	}
	if p := fl.Merchants["plain"]; p.Domains != nil || p.PathPrefix != "" {
		t.Errorf("plain: %q %q", p.Domains, p.PathPrefix)
	}
	for _, tt := range []struct{ src, want string }{
		{`domains = ["ACME.example.com"]`, "must be written in lower case"},
		{`domains = ["acme.example.com."]`, "must not end with a dot"},
		{`domains = ["*"]`, "wildcard only as its first label"},
		{`domains = ["*.*.example.com"]`, "wildcard only as its first label"},
		{`domains = ["acme_1.example.com"]`, "is not a host name"},
		{`domains = ["acme.example.com:8080"]`, "is not a host name"},
		{`domains = [""]`, "must not be empty"},
		{`domains = ["` + strings.Repeat("a", 64) + `.example"]`, "is not a host name"},
		{`domains = ["a.example", "a.example"]`, `"a.example" is listed twice`},
		{`domains = "a.example"`, "domains must be a list of strings"},
		{`path_prefix = "acme/"`, "must start and end with '/'"},
		{`path_prefix = "/"`, "must start and end with '/' and name a path below /"},
		{`path_prefix = "/a b/"`, "may hold only letters"},
		{`path_prefix = "/a//b/"`, "may hold only letters"},
		{`path_prefix = "/./"`, `no "." or ".." segment`},
		{`path_prefix = "/%2e%2e/"`, "may hold only letters"},
	} {
		_, errs := load(t, base+"merchant \"m\" {\n  package = \"app\"\n  channel = \"stable\"\n  "+tt.src+"\n}\n")
		if !strings.Contains(errs, tt.want) {
			t.Errorf("%s: %s, want %q", tt.src, errs, tt.want)
		}
	}
	_, _, diags := Load([]Source{{Name: "t.hcl", Dir: "/specs", Bytes: []byte(base + `
merchant "a" {
  package     = "app"
  channel     = "stable"
  domains     = ["shop.example"]
  path_prefix = "/shop/"
}
merchant "b" {
  package     = "app"
  channel     = "stable"
  domains     = ["shop.example"]
  path_prefix = "/shop/"
}
`)}}, Options{})
	errs = ""
	for _, d := range diags {
		errs += d.Detail + "\n"
	}
	for _, want := range []string{`Merchant "b" lists domain "shop.example", which merchant "a" already has (t.hcl:11:18)`, `Merchant "b" has path_prefix "/shop/", which merchant "a" already has (t.hcl:12:17)`} {
		if !strings.Contains(errs, want) {
			t.Errorf("clash: %s, want %q", errs, want)
		}
	}
}
