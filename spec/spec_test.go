package spec

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func load(t *testing.T, src string) (*Fleet, string) {
	t.Helper()
	fl, _, diags := Load([]Source{{Name: "t.hcl", Dir: "/specs", Bytes: []byte(src)}}, Options{Ports: PortRange{Low: 8100, High: 8199}})
	return fl, diags.Error()
}

const base = `
database "db" { dsn = env("STEWARD_SPEC_TEST_DSN", "postgres://u:hunter2@h/db") }
package "app" {
  source = "file://../pkgs"
  channel "stable" { version = "1.2.3" }
}
`

func TestSecretsAreRedactedEverywhere(t *testing.T) {
	fl, errs := load(t, base+`
merchant "m1" {
  package = "app"
  channel = "stable"
  database = "db"
  env = {
    PUBLIC = "visible"
    TOKEN  = env("STEWARD_SPEC_TEST_TOKEN", "s3cr3t-token")
    PASS   = "plain-but-marked"
  }
  sensitive = ["PASS"]
}`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	m := fl.Merchants["m1"]
	if !m.Env["TOKEN"].Sensitive || !m.Env["PASS"].Sensitive || m.Env["PUBLIC"].Sensitive {
		t.Fatalf("sensitivity: %+v", m.Env)
	}
	if m.Env["TOKEN"].Value.Reveal() != "s3cr3t-token" || fl.Databases["db"].DSN.Reveal() != "postgres://u:hunter2@h/db" {
		t.Fatal("Reveal does not return the value")
	}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "dsn", fl.Databases["db"].DSN, "env", m.Env["TOKEN"].Value)
	js, _ := json.Marshal(fl)
	renderings := map[string]string{
		"%v":   fmt.Sprintf("%v", fl.Databases["db"]),
		"%+v":  fmt.Sprintf("%+v", m.Env),
		"%#v":  fmt.Sprintf("%#v", fl.Databases["db"].DSN),
		"%s":   fmt.Sprintf("%s", m.Env["TOKEN"].Value),
		"json": string(js),
		"slog": logs.String(),
		"fp":   m.Env["TOKEN"].FingerprintWith([]byte("key")) + fl.Databases["db"].DSN.FingerprintWith([]byte("key")),
		"disp": m.Env["TOKEN"].Display() + m.Env["PASS"].Display(),
	}
	for how, s := range renderings {
		for _, secret := range []string{"hunter2", "s3cr3t", "plain-but-marked"} {
			if strings.Contains(s, secret) {
				t.Errorf("%s rendering reveals %q: %s", how, secret, s)
			}
		}
	}
	if m.Env["PUBLIC"].Display() != "visible" {
		t.Errorf("non-sensitive value not displayed")
	}
}

func TestDefaultsAndResolution(t *testing.T) {
	fl, errs := load(t, base+`
defaults {
  package = "app"
  channel = "stable"
  database = "db"
  stop_grace = "3s"
  env = { LOCALE = "en_US", REGION = "eu" }
  health {
    http = "/healthz"
    failures = 5
  }
}
merchant "a" {}
merchant "b" {
  version = "1.0.0"
  env = { LOCALE = "de_DE" }
  health { tcp = true }
}
merchant "c-1" { db_name = "shared" }
`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	a, b, c := fl.Merchants["a"], fl.Merchants["b"], fl.Merchants["c-1"]
	if a.Package != "app" || a.Channel != "stable" || a.Version != "1.2.3" || a.Database != "db" || a.DBName != "a" || a.StopGrace.String() != "3s" {
		t.Errorf("a = %+v", a)
	}
	if a.Health.HTTP != "/healthz" || a.Health.Failures != 5 || a.Health.Interval.String() != "5s" {
		t.Errorf("a.Health = %+v", a.Health)
	}
	if b.Channel != "" || b.Version != "1.0.0" || b.Env["LOCALE"].Display() != "de_DE" || b.Env["REGION"].Display() != "eu" {
		t.Errorf("b = %+v", b)
	}
	if !b.Health.TCP || b.Health.HTTP != "" || b.Health.Failures != 5 {
		t.Errorf("b.Health = %+v", b.Health)
	}
	if c.DBName != "shared" {
		t.Errorf("c.DBName = %q", c.DBName)
	}
	if fl.Packages["app"].Source != "/pkgs" {
		t.Errorf("package source = %q, want it resolved against the spec dir", fl.Packages["app"].Source)
	}
}

func TestHostConfig(t *testing.T) {
	h, _, diags := LoadHostBytes([]byte(`
source { path = "specs" }
state { path = "/var/lib/steward" }
runtime {
  ports = "9000-9009"
  log_max_size = "2MB"
  log_keep = 3
}
api { listen = "127.0.0.1:9999" }
daemon { resync = "30s" }
`), "/etc/steward/steward.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if h.Source.Path != "/etc/steward/specs" || h.State.Path != "/var/lib/steward" || h.Runtime.Root != "/etc/steward/.steward/run" {
		t.Errorf("paths: %+v", h)
	}
	if h.Runtime.Ports != (PortRange{9000, 9009}) || h.Runtime.LogMaxBytes != 2<<20 || h.Runtime.LogKeep != 3 || h.Daemon.Resync.String() != "30s" {
		t.Errorf("runtime: %+v %+v", h.Runtime, h.Daemon)
	}
	_, _, diags = LoadHostBytes([]byte(`runtime { ports = "9000:9009" }`), "x.hcl")
	if !diags.HasErrors() || diags[0].Subject == nil || diags[0].Subject.Start.Line != 1 || diags[0].Subject.Start.Column != 19 || !strings.Contains(diags.Error(), "LOW-HIGH") {
		t.Errorf("bad port range: %v", diags)
	}
}

func TestParsePortRangeAndSize(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{{"8100-8999", true}, {" 1 - 65535 ", true}, {"9000-8000", false}, {"0-10", false}, {"80", false}, {"a-b", false}, {"1-70000", false}} {
		if _, err := ParsePortRange(tt.in); (err == nil) != tt.ok {
			t.Errorf("ParsePortRange(%q) err = %v", tt.in, err)
		}
	}
	for in, want := range map[string]int64{"10MB": 10 << 20, "512kb": 512 << 10, "1GiB": 1 << 30, "100": 100} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Error("ParseSize(lots) should fail")
	}
}

func TestContentRevisionIgnoresOrder(t *testing.T) {
	a := []Source{{Name: "/x/a.hcl", Bytes: []byte("A")}, {Name: "/x/b.hcl", Bytes: []byte("B")}}
	b := []Source{a[1], a[0]}
	if ContentRevision(a) != ContentRevision(b) {
		t.Error("revision depends on order")
	}
	c := []Source{{Name: "/x/a.hcl", Bytes: []byte("A")}, {Name: "/x/b.hcl", Bytes: []byte("C")}}
	if ContentRevision(a) == ContentRevision(c) {
		t.Error("revision ignores content")
	}
}

func TestBackupPolicy(t *testing.T) {
	fl, errs := load(t, base+`
backup { keep = 3 }
package "other" {
  source = "/x"
  channel "stable" { version = "1.0.0" }
  backup { enabled = false }
}
merchant "m" {
  package = "app"
  channel = "stable"
}`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	if b := fl.BackupFor("app"); !b.Enabled || b.Keep != 3 {
		t.Errorf("fleet policy = %+v", b)
	}
	if b := fl.BackupFor("other"); b.Enabled {
		t.Errorf("package override = %+v", b)
	}
	fl, _ = load(t, base)
	if b := fl.BackupFor("app"); b.Enabled {
		t.Errorf("without a backup block backups must be off: %+v", b)
	}
}

func TestContentRevisionSeesMovedFiles(t *testing.T) {
	a := []Source{{Name: "/s/east/a.hcl", Bytes: []byte("A")}, {Name: "/s/west/b.hcl", Bytes: []byte("B")}}
	moved := []Source{{Name: "/s/west/a.hcl", Bytes: []byte("A")}, {Name: "/s/west/b.hcl", Bytes: []byte("B")}}
	elsewhere := []Source{{Name: "/tmp/x/s/east/a.hcl", Bytes: []byte("A")}, {Name: "/tmp/x/s/west/b.hcl", Bytes: []byte("B")}}
	if ContentRevision(a) == ContentRevision(moved) {
		t.Error("moving a file between directories does not change the revision")
	}
	if ContentRevision(a) != ContentRevision(elsewhere) {
		t.Error("the same tree in another place has another revision")
	}
}
