package spec

import (
	"os"
	"path/filepath"
	"testing"
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
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, _, diags := Load([]Source{{Name: "fuzz.hcl", Dir: "/", Bytes: b}}, Options{Ports: PortRange{Low: 8100, High: 8199}})
		if diags.HasErrors() {
			return
		}
		ports := map[int]string{}
		for id, m := range fl.Merchants {
			if !merchantIDRe.MatchString(id) {
				t.Fatalf("accepted merchant id %q", id)
			}
			if m.Version == "" {
				t.Fatalf("merchant %q has no version", id)
			}
			if _, ok := fl.Packages[m.Package]; !ok {
				t.Fatalf("merchant %q has unknown package %q", id, m.Package)
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
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _, diags := LoadHostBytes(b, "/etc/steward.hcl")
		if diags.HasErrors() {
			return
		}
		if h.Runtime.Ports.Low < 1 || h.Runtime.Ports.High > 65535 || h.Runtime.Ports.Low > h.Runtime.Ports.High {
			t.Fatalf("accepted port range %v", h.Runtime.Ports)
		}
	})
}
