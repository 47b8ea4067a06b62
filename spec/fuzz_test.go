package spec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzLoad feeds arbitrary bytes to the fleet parser: it must return a fleet
// or diagnostics, never panic, and never accept a fleet that breaks the
// invariants validation promises.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("../examples/merchants/*.hcl")
	more, _ := filepath.Glob("../cmd/steward/testdata/validate/*.hcl")
	for _, p := range append(seeds, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`merchant "a" { env = { X = env("HOME") } }`))
	f.Add([]byte(`merchant "a" { port = 1e99 }`))
	for _, b := range deepSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, _, diags := Load([]Source{{Name: "fuzz.hcl", Dir: "/", Bytes: b}}, Options{Ports: PortRange{Low: 8100, High: 8199}})
		if diags.HasErrors() {
			return
		}
		ports := map[int]string{}
		routes := map[string]string{}
		if r := fl.Restart; r.Initial < MinRestartDuration || r.Initial > r.Max || r.ResetAfter < MinRestartDuration {
			t.Fatalf("accepted restart %+v", r)
		}
		for id, m := range fl.Merchants {
			for _, dom := range m.Domains {
				if domainError(dom, true) != "" || routes[dom] != "" {
					t.Fatalf("accepted domain %q of %q (also %q)", dom, id, routes[dom])
				}
				routes[dom] = id
			}
			if p := m.PathPrefix; p != "" {
				if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") || routes["path:"+p] != "" {
					t.Fatalf("accepted path_prefix %q of %q", p, id)
				}
				routes["path:"+p] = id
			}
			if !merchantIDRe.MatchString(id) {
				t.Fatalf("accepted merchant id %q", id)
			}
			if m.Version == "" {
				t.Fatalf("merchant %q has no version", id)
			}
			if _, ok := fl.Packages[m.Package]; !ok {
				t.Fatalf("merchant %q has unknown package %q", id, m.Package)
			}
			if oneOf(m.DBName, reservedDBNames...) {
				t.Fatalf("merchant %q uses database %q", id, m.DBName)
			}
			for k, v := range m.Env {
				if strings.IndexByte(v.Value.Reveal(), 0) >= 0 || len(k)+len(v.Value.Reveal())+2 > MaxEnvString {
					t.Fatalf("merchant %q has env %s that execve refuses", id, k)
				}
			}
			if environmentSize(fl, m) > MaxEnvironment {
				t.Fatalf("merchant %q has an environment of %d bytes", id, environmentSize(fl, m))
			}
			if m.Port != 0 {
				if other, ok := ports[m.Port]; ok {
					t.Fatalf("merchants %q and %q share port %d", id, other, m.Port)
				}
				ports[m.Port] = id
			}
		}
	})
}

// FuzzLoadHost does the same for the host config.
func FuzzLoadHost(f *testing.F) {
	if b, err := os.ReadFile("../examples/steward.hcl"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`runtime { ports = "1-2" log_max_size = "1K" }`))
	f.Add([]byte("limits {\n  spec_depth = 1000\n  spec_file_size = \"64MB\"\n}\n"))
	hosts, _ := filepath.Glob("../cmd/steward/testdata/validate/host/*.hcl")
	for _, p := range hosts {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("router {\n  nginx {\n    mode = \"system\"\n    include_file = \"x.conf\"\n    test_command = [\"nginx\", \"-t\"]\n  }\n}\n"))
	for _, b := range deepSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _, diags := LoadHostBytes(b, "/etc/steward.hcl")
		if diags.HasErrors() {
			return
		}
		if h.Limits.Depth < minDepthLimit || h.Limits.Depth > maxDepthLimit || h.Limits.FileSize < minFileSizeLimit || h.Limits.FileSize > maxFileSizeLimit {
			t.Fatalf("accepted limits %+v", h.Limits)
		}
		if r := h.Router; r != nil {
			n := r.Nginx
			if !oneOf(n.Mode, RouterManaged, RouterSystem) || (n.Mode == RouterManaged && n.Listen == "") || (n.Mode == RouterSystem && n.IncludeFile == "") ||
				len(n.TestCommand) == 0 || len(n.ReloadCommand) == 0 || n.RetryAfter < time.Second || n.ProxyReadTimeout <= 0 || n.ProxyConnectTimeout <= 0 {
				t.Fatalf("accepted router %+v", n)
			}
		}
		if h.Runtime.Ports.Low < 1 || h.Runtime.Ports.High > 65535 || h.Runtime.Ports.Low > h.Runtime.Ports.High {
			t.Fatalf("accepted port range %v", h.Runtime.Ports)
		}
	})
}

// deepSeeds are inputs nested far beyond the depth limit in every way the
// parser recurses: without the limits each ends in a stack overflow or
// hundreds of megabytes.
func deepSeeds() [][]byte {
	const n = 5000
	return [][]byte{
		[]byte(nest(n, "(", ")")),
		[]byte(nest(n, "[", "]")),
		[]byte(nest(n, "{a=", "}")),
		[]byte(strings.Repeat("merchant \"a\" {\n", n) + strings.Repeat("}\n", n)),
		[]byte("a = \"" + strings.Repeat(`${"`, n) + strings.Repeat(`"}`, n) + "\"\n"),
		[]byte("a = <<EOT\n" + strings.Repeat("%{ if true }", n) + strings.Repeat("%{ endif }", n) + "\nEOT\n"),
		[]byte("a = " + strings.Repeat("!", 10*n) + "true\n"),
		[]byte("a = 1" + strings.Repeat("+1", 10*n) + "\n"),
		[]byte("merchant \"a\" { env = { X = " + strings.Repeat("(", 65) + "\"x\"" + strings.Repeat(")", 65) + " } }\n"),
	}
}
