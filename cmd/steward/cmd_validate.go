package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"

	"steward/spec"
)

func cmdValidate(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("validate", " [PATH...]", `
Checks the host config and every fleet spec file, and reports every problem
at once with its file, line and column. Nothing is started or changed.

Without PATH the specs named by the host config's source are checked. With
PATHs (spec files or directories) only those are checked, against the host
config's port range when there is one.

Exit status: 0 when valid, 1 when there are errors.`)
	config := configFlag(fs)
	output := fs.String("o", "text", "output `format`: text or json")
	paths, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return e.errorf("-o must be text or json, not %q", *output)
	}
	var (
		fleet *spec.Fleet
		files map[string]*hcl.File
		diags hcl.Diagnostics
		red   *spec.Redactor // every secret of the host config and the specs
	)
	if len(paths) == 0 {
		l := e.load(ctx, *config)
		fleet, files, diags = l.fleet, l.files, l.diags
		red = e.loadedRedactor(*config, l)
	} else {
		h, hfiles, hdiags := e.loadHost(*config, true)
		files, diags = hfiles, hdiags
		if h != nil {
			red = h.Redactor()
		}
		if !hdiags.HasErrors() {
			srcs, err := readSources(paths, h.Limits)
			if err != nil {
				return e.errorf("%s", err)
			}
			fl, ffiles, fdiags := spec.Load(srcs, spec.Options{Ports: h.Runtime.Ports, Limits: h.Limits, ReservedPorts: h.ReservedPorts()})
			files, diags = mergeFiles(files, ffiles), append(diags, fdiags...)
			red = red.Merge(fl.Redactor())
			if !fdiags.HasErrors() {
				fleet = fl
			}
		}
	}
	diags = append(diags, e.deferredWarnings(*config)...)
	valid := !diags.HasErrors()
	if *output == "json" {
		out := struct {
			Valid       bool             `json:"valid"`
			Revision    string           `json:"revision,omitempty"`
			Merchants   int              `json:"merchants"`
			Diagnostics []jsonDiagnostic `json:"diagnostics"`
		}{Valid: valid, Diagnostics: diagnosticsJSON(diags, red)}
		if fleet != nil {
			out.Revision, out.Merchants = fleet.Revision, len(fleet.Merchants)
		}
		writeJSON(e.stdout, out)
	} else {
		renderDiagnosticsRedacted(e.stderr, files, diags, red)
		if valid {
			fmt.Fprintf(e.stdout, "Valid: %s, %s, %s (revision %s).\n", plural(len(fleet.Merchants), "merchant"),
				plural(len(fleet.Databases), "database"), plural(len(fleet.Packages), "package"), fleet.Revision)
		} else {
			n, f := countErrors(diags)
			fmt.Fprintf(e.stderr, "\nInvalid: %s in %s. Nothing was changed.\n", plural(n, "error"), plural(max(f, 1), "file"))
		}
	}
	if !valid {
		return exitError
	}
	return exitOK
}

// deferredWarnings warns about host config secrets evaluated only when used
// (api.token, api.webhook_secret) that cannot be evaluated now.
func (e *env) deferredWarnings(config string) hcl.Diagnostics {
	h, _, diags := e.loadHost(config, true)
	if h == nil || diags.HasErrors() {
		return nil
	}
	var out hcl.Diagnostics
	for _, s := range []spec.DeferredSecret{h.API.Token, h.API.WebhookSecret} {
		if w := s.Warning(); w != nil {
			out = append(out, w)
		}
	}
	return out
}

// loadedRedactor returns a Redactor for the secrets of what l loaded; an
// invalid fleet is loaded again for the values it holds.
func (e *env) loadedRedactor(config string, l *loaded) *spec.Redactor {
	h := l.host
	if h == nil {
		h, _, _ = e.loadHost(config, false)
	}
	if h == nil {
		return nil
	}
	red := h.Redactor()
	fl := l.fleet
	if fl == nil && l.snap != nil {
		fl, _, _ = spec.Load(l.snap.Sources, spec.Options{Ports: h.Runtime.Ports, Limits: h.Limits})
	}
	if fl != nil {
		red = red.Merge(fl.Redactor())
	}
	return red
}

// readSources reads spec files and directories given on the command line.
func readSources(paths []string, lim spec.Limits) ([]spec.Source, error) {
	var srcs []spec.Source
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		names := []string{p}
		if st.IsDir() {
			if names, err = spec.SpecFiles(p); err != nil {
				return nil, err
			}
		}
		for _, n := range names {
			b, err := spec.ReadFile(n, lim)
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, spec.Source{Name: n, Dir: filepath.Dir(n), Bytes: b})
		}
	}
	return srcs, nil
}
