package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// exampleHost writes a host config in a temp dir whose source is a copy
// of the example fleet moved to ports 18100-18199, away from the ports
// the demo (make demo) and the default config use, and whose state and
// runtime live in the temp dir.
func exampleHost(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	return writeHost(t, dir, exampleSpecs(t, filepath.Join(dir, "specs"), 18100, ""))
}

// exampleSpecs copies the example fleet's specs into dir with their fixed
// ports moved from 8100 up to low up, and their package source set to pkgs
// (when not ""). It returns dir.
func exampleSpecs(t *testing.T, dir string, low int, pkgs string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if pkgs == "" {
		// Keep the relative source (and so the spec revision) as it is,
		// pointing at packages built for the tests (examples/packages
		// exists only after make demo).
		os.Symlink(examplePackages(t), filepath.Join(filepath.Dir(dir), "packages"))
	}
	port := regexp.MustCompile(`(?m)^(\s*port\s*=\s*)(81\d\d)\s*$`)
	for _, name := range []string{"fleet.hcl", "east.hcl", "west.hcl"} {
		b, err := os.ReadFile(filepath.Join("../../examples/merchants", name))
		if err != nil {
			t.Fatal(err)
		}
		s := port.ReplaceAllStringFunc(string(b), func(line string) string {
			m := port.FindStringSubmatch(line)
			n, _ := strconv.Atoi(m[2])
			return m[1] + strconv.Itoa(n-8100+low)
		})
		if pkgs != "" {
			s = strings.ReplaceAll(s, "file://../packages", "file://"+pkgs)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeHost(t *testing.T, dir, specs string) string {
	t.Helper()
	cfg := filepath.Join(dir, "steward.hcl")
	body := `source { path = "` + specs + `" }
state   { path = "state" }
runtime {
  root  = "run"
  ports = "18100-18199"
}
`
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPlanExampleFleetFromEmpty(t *testing.T) {
	cfg := exampleHost(t)
	stdout, stderr, code := steward(t, nil, "plan", "-config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "plan-example.golden", stdout)

	_, _, code = steward(t, nil, "plan", "-config", cfg, "-detailed-exitcode")
	if code != exitChanges {
		t.Errorf("-detailed-exitcode with changes: exit %d, want 2", code)
	}

	stdout, _, code = steward(t, nil, "plan", "-config", cfg, "-o", "json")
	if code != exitOK {
		t.Fatalf("plan -o json: exit %d", code)
	}
	var p struct {
		HasChanges bool `json:"has_changes"`
		Summary    struct{ Create int }
		Actions    []struct {
			Action, Merchant, Reason string
			After                    struct{ Port int }
		}
	}
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, stdout)
	}
	if !p.HasChanges || p.Summary.Create != 6 || len(p.Actions) != 6 || p.Actions[0].Action != "create" || p.Actions[0].After.Port != 18101 {
		t.Errorf("plan JSON = %+v", p)
	}
}

func TestPlanRedactsSecrets(t *testing.T) {
	cfg := exampleHost(t)
	out := filepath.Join(t.TempDir(), "saved.plan")
	vars := map[string]string{}
	stdout, _, _ := steward(t, vars, "plan", "-config", cfg, "-out", out)
	js, _, _ := steward(t, vars, "plan", "-config", cfg, "-o", "json")
	saved, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"demo-key", "example-only", "postgres://"} {
		for name, text := range map[string]string{"text": stdout, "json": js, "saved plan": string(saved)} {
			if strings.Contains(text, secret) {
				t.Errorf("%s output reveals %q", name, secret)
			}
		}
	}
}

func TestPlanInvalidSpecsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	specs := filepath.Join(dir, "specs")
	os.MkdirAll(specs, 0o755)
	os.WriteFile(filepath.Join(specs, "bad.hcl"), []byte("merchant \"acme\" {\n  port = \"x\"\n"), 0o644)
	cfg := writeHost(t, dir, specs)
	_, stderr, code := steward(t, nil, "plan", "-config", cfg, "-detailed-exitcode")
	if code != exitError || !strings.Contains(stderr, "bad.hcl:") || !strings.Contains(stderr, "no plan was made") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}

func TestFmt(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "m.hcl")
	os.WriteFile(f, []byte("merchant \"acme\" {\npackage = \"invoicing\"\n    version=\"1.0.0\"\n}\n"), 0o644)
	stdout, _, code := steward(t, nil, "fmt", "-check", dir)
	if code != exitError || !strings.Contains(stdout, "m.hcl") {
		t.Fatalf("fmt -check on an unformatted file: exit %d %q", code, stdout)
	}
	if _, _, code := steward(t, nil, "fmt", dir); code != exitOK {
		t.Fatalf("fmt: exit %d", code)
	}
	got, _ := os.ReadFile(f)
	want := "merchant \"acme\" {\n  package = \"invoicing\"\n  version = \"1.0.0\"\n}\n"
	if string(got) != want {
		t.Fatalf("formatted:\n%s\nwant:\n%s", got, want)
	}
	if _, _, code := steward(t, nil, "fmt", "-check", dir); code != exitOK {
		t.Fatalf("fmt -check on a formatted file: exit %d", code)
	}
	// The example fleet is kept formatted.
	if stdout, _, code := steward(t, nil, "fmt", "-check", "-config", "../../examples/steward.hcl"); code != exitOK {
		t.Fatalf("example fleet is not formatted: %s", stdout)
	}
}
