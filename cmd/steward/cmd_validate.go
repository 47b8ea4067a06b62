package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"steward/internal/app"
	"steward/source"
	"steward/spec"
)

func cmdValidate(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("validate", " [PATH...]", `
Checks the host config and every fleet spec file, and reports every problem
at once with its file, line and column. Nothing is started or changed.

Without PATH the specs named by the host config's source are checked.

With PATHs (spec files or directories), the fleet they belong to is loaded
so that references between files resolve, and only the problems of the
named files are reported (with problems between them and other files, and
problems of the fleet as a whole). The fleet is the directory given with
-fleet, or else the host config's source.path when every PATH lies below it.
Without either only the named files are loaded. Errors in other files of
the fleet are counted on stderr but do not fail the check, which suits a
pre-commit hook on the changed files:

  steward validate -fleet . $(git diff --cached --name-only -- '*.hcl')

(-fleet without PATH checks every file of the fleet).

Exit status: 0 when valid, 1 when there are errors.`)
	config := configFlag(fs)
	output := fs.String("o", "text", "output `format`: text or json")
	fleetDir := fs.String("fleet", "", "the fleet's spec `DIR` that the named files belong to (default: source.path of the host config, when they lie below it)")
	paths, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return e.errorf("-o must be text or json, not %q", *output)
	}
	if *fleetDir != "" && len(paths) == 0 {
		paths = []string{*fleetDir} // every file of the fleet
	}
	var (
		r   *validation
		err error
	)
	if len(paths) == 0 {
		r = e.validateConfigured(ctx, *config)
	} else if r, err = e.validateNamed(*config, *fleetDir, paths); err != nil {
		return e.errorf("%s", err)
	}
	valid := !r.diags.HasErrors()
	if *output == "json" {
		out := struct {
			Valid       bool             `json:"valid"`
			Revision    string           `json:"revision,omitempty"`
			Merchants   int              `json:"merchants"`
			Diagnostics []jsonDiagnostic `json:"diagnostics"`
			// OtherErrors counts the errors of files of the fleet that were
			// not named (with PATHs only).
			OtherErrors int `json:"other_errors,omitempty"`
		}{Valid: valid, Diagnostics: diagnosticsJSON(r.diags, r.red), OtherErrors: r.otherErrors}
		if r.fleet != nil {
			out.Revision, out.Merchants = r.fleet.Revision, len(r.fleet.Merchants)
		}
		writeJSON(e.stdout, out)
	} else {
		renderDiagnosticsRedacted(e.stderr, r.files, r.diags, r.red)
		switch {
		case !valid:
			n, f := countErrors(r.diags)
			fmt.Fprintf(e.stderr, "\nInvalid: %s in %s. Nothing was changed.\n", plural(n, "error"), plural(max(f, 1), "file"))
			if len(paths) > 0 && r.dir == "" && hasUnknownReference(r.diags) {
				fmt.Fprintln(e.stderr, "Note: only the named files were read. If the packages and databases they use are declared in other files of the fleet, give its directory: steward validate -fleet DIR FILE...")
			}
		case r.fleet != nil && r.dir == "":
			fmt.Fprintf(e.stdout, "Valid: %s, %s, %s (revision %s).\n", plural(len(r.fleet.Merchants), "merchant"),
				plural(len(r.fleet.Databases), "database"), plural(len(r.fleet.Packages), "package"), r.fleet.Revision)
		case r.fleet != nil:
			fmt.Fprintf(e.stdout, "Valid: %s checked in the fleet in %s: %s, %s, %s (revision %s).\n", plural(r.named, "file"), displayPath(r.dir),
				plural(len(r.fleet.Merchants), "merchant"), plural(len(r.fleet.Databases), "database"), plural(len(r.fleet.Packages), "package"), r.fleet.Revision)
		default:
			fmt.Fprintf(e.stdout, "Valid: %s checked in the fleet in %s.\n", plural(r.named, "file"), displayPath(r.dir))
		}
	}
	if r.otherErrors > 0 {
		fmt.Fprintf(e.stderr, "Note: %s in %s of the fleet not named here %s not shown; steward validate %s shows them.\n",
			plural(r.otherErrors, "error"), plural(r.otherFiles, "other file"), were(r.otherErrors), displayPath(r.dir))
		if r.otherUnparsed > 0 {
			fmt.Fprintf(e.stderr, "Note: %s did not parse; references into %s could not be checked.\n",
				plural(r.otherUnparsed, "other file"), map[bool]string{true: "it", false: "them"}[r.otherUnparsed == 1])
		}
	}
	if !valid {
		return exitError
	}
	return exitOK
}

// hasUnknownReference reports whether diags say that a package or a
// database is not declared.
func hasUnknownReference(diags hcl.Diagnostics) bool {
	for _, d := range diags {
		switch d.Summary {
		case "Unknown package", "Unknown database", "Missing package":
			return true
		}
	}
	return false
}

func were(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// validation is what validate found.
type validation struct {
	fleet *spec.Fleet // the valid fleet, or nil
	files map[string]*hcl.File
	diags hcl.Diagnostics // the diagnostics to report
	red   *spec.Redactor  // every secret of the host config and the specs

	// With PATHs: the fleet's directory ("" when only the named files were
	// loaded), the number of named files, and the errors of the others.
	dir                                    string
	named                                  int
	otherErrors, otherFiles, otherUnparsed int
}

// specOptions are the options fleet specs are loaded with under h.
func specOptions(h *spec.Host) spec.Options {
	return spec.Options{Ports: h.Runtime.Ports, Limits: h.Limits, ReservedPorts: h.ReservedPorts()}
}

// hostRedactor returns h's Redactor, or nil without a host config.
func hostRedactor(h *spec.Host) *spec.Redactor {
	if h == nil {
		return nil
	}
	return h.Redactor()
}

// deferredWarnings warns about host config secrets evaluated only when used
// (api.token, api.webhook_secret) that cannot be evaluated now.
func deferredWarnings(h *spec.Host) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, s := range []spec.DeferredSecret{h.API.Token, h.API.WebhookSecret} {
		if w := s.Warning(); w != nil {
			out = append(out, w)
		}
	}
	return out
}

// validateConfigured checks the host config and the specs its source
// names.
func (e *env) validateConfigured(ctx context.Context, config string) *validation {
	h, hfiles, hdiags := e.loadHost(config, false)
	r := &validation{files: mergeFiles(nil, hfiles), diags: hdiags, red: hostRedactor(h)}
	if hdiags.HasErrors() {
		return r
	}
	r.diags = append(r.diags, deferredWarnings(h)...)
	r.diags = append(r.diags, runtimeUserDiags(h)...)
	snap, err := newSource(h, nil).Load(ctx)
	if err != nil {
		what := "the spec directory " + displayPath(h.Source.Path)
		if g := h.Source.Git; g != nil {
			what = fmt.Sprintf("git %s (ref %s)", source.Redact(g.URL), g.Ref)
		}
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read specs", Detail: r.red.Redact(fmt.Sprintf("Reading %s: %s.", what, err))})
		return r
	}
	fl, ffiles, fdiags := spec.Load(snap.Sources, specOptions(h))
	fl.Revision = snap.Revision
	r.files, r.diags, r.red = mergeFiles(r.files, ffiles), append(r.diags, fdiags...), r.red.Merge(fl.Redactor())
	if !fdiags.HasErrors() {
		r.fleet = fl
	}
	return r
}

// validateNamed checks the spec files and directories in paths, within the
// fleet they belong to (see the help of validate).
func (e *env) validateNamed(config, fleetDir string, paths []string) (*validation, error) {
	h, hfiles, hdiags := e.loadHost(config, true)
	r := &validation{files: mergeFiles(nil, hfiles), diags: hdiags, red: hostRedactor(h)}
	if hdiags.HasErrors() {
		return r, nil
	}
	r.diags = append(r.diags, deferredWarnings(h)...)
	named, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	r.named = len(named)
	isNamed := map[string]bool{}
	for _, n := range named {
		isNamed[absPath(n)] = true
	}
	switch {
	case fleetDir != "":
		st, err := os.Stat(fleetDir)
		if err != nil {
			return nil, fmt.Errorf("-fleet: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("-fleet %s is not a directory", fleetDir)
		}
		r.dir = absPath(fleetDir)
	case hostConfigExists(h) && h.Source.Git == nil && allBelow(named, h.Source.Path):
		r.dir = h.Source.Path
	}
	names := named
	if r.dir != "" {
		all, err := spec.SpecFiles(r.dir)
		if err != nil {
			return nil, err
		}
		names = nil
		inFleet := map[string]bool{}
		for _, n := range all {
			inFleet[absPath(n)] = true
			names = append(names, n)
		}
		for _, n := range named {
			if !inFleet[absPath(n)] {
				names = append(names, n)
			}
		}
	}
	var srcs []spec.Source
	var readDiags hcl.Diagnostics
	for _, n := range names {
		b, err := spec.ReadFile(n, h.Limits)
		if err != nil {
			readDiags = append(readDiags, spec.ReadDiagnostic("Cannot read spec file", n, err))
			continue
		}
		srcs = append(srcs, spec.Source{Name: n, Dir: filepath.Dir(n), Bytes: b})
	}
	fl, ffiles, fdiags := spec.Load(srcs, specOptions(h))
	r.files, r.red = mergeFiles(r.files, ffiles), r.red.Merge(fl.Redactor())
	all := append(readDiags, fdiags...)
	if r.dir == "" {
		r.diags = append(r.diags, all...)
		if !all.HasErrors() {
			r.fleet = fl
		}
		return r, nil
	}
	// Report the named files' problems, the problems between them and other
	// files, and those of the fleet as a whole; count the rest.
	namedNames := make([]string, 0, len(named))
	for _, n := range names {
		if isNamed[absPath(n)] {
			namedNames = append(namedNames, n)
		}
	}
	concerns := func(d *hcl.Diagnostic) bool {
		if d.Subject == nil || isNamed[absPath(d.Subject.Filename)] {
			return true
		}
		for _, n := range namedNames {
			if strings.Contains(d.Detail, n+":") {
				return true
			}
		}
		return false
	}
	others := map[string]bool{}
	for _, d := range all {
		if concerns(d) {
			r.diags = append(r.diags, d)
		} else if d.Severity == hcl.DiagError {
			r.otherErrors++
			others[d.Subject.Filename] = true
		}
	}
	r.otherFiles = len(others)
	for _, s := range srcs {
		if others[s.Name] && !parses(s, h.Limits) {
			r.otherUnparsed++
		}
	}
	for _, d := range readDiags {
		if others[d.Subject.Filename] {
			r.otherUnparsed++
		}
	}
	if !all.HasErrors() {
		r.fleet = fl
	}
	return r, nil
}

// parses reports whether src parses as HCL within the limits.
func parses(src spec.Source, lim spec.Limits) bool {
	if spec.CheckSource(src.Name, src.Bytes, lim).HasErrors() {
		return false
	}
	_, diags := hclsyntax.ParseConfig(src.Bytes, src.Name, hcl.InitialPos)
	return !diags.HasErrors()
}

// expandPaths returns the spec files paths name: files as given, and the
// *.hcl files below directories.
func expandPaths(paths []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
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
			if a := absPath(n); !seen[a] {
				seen[a] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// allBelow reports whether every path lies below dir.
func allBelow(paths []string, dir string) bool {
	dir = absPath(dir)
	for _, p := range paths {
		if rel, err := filepath.Rel(dir, absPath(p)); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return false
		}
	}
	return len(paths) > 0
}

// hostConfigExists reports whether h was read from a file (not the built-in
// defaults used when there is no ./steward.hcl).
func hostConfigExists(h *spec.Host) bool {
	if h == nil {
		return false
	}
	st, err := os.Stat(h.File)
	return err == nil && st.Mode().IsRegular()
}

// runtimeUserDiags warns when merchants have no user to run as on this
// host (see app.RuntimeCredential): apply would refuse to start any. A
// warning, as the specs may be checked on another machine than the host.
func runtimeUserDiags(h *spec.Host) hcl.Diagnostics {
	if _, err := app.RuntimeCredential(h); err != nil {
		rng := h.Runtime.UserRange
		if rng.Filename == "" {
			rng = hcl.Range{Filename: h.File, Start: hcl.InitialPos, End: hcl.InitialPos}
		}
		return hcl.Diagnostics{{Severity: hcl.DiagWarning, Summary: "Merchants cannot start on this host", Detail: err.Error() + "; apply and steward run refuse to start merchants until then.", Subject: &rng}}
	}
	return nil
}
