package main

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclwrite"

	"steward/spec"
)

func cmdFmt(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("fmt", " [PATH...]", `
Rewrites spec files in the canonical HCL layout (aligned equals signs,
two-space indentation). Without PATH it formats the host config and every
spec file under its source path. Files with syntax errors are reported and
left untouched.

With -check nothing is written: the files that are not formatted are listed
and the exit status is 1 if there are any.`)
	config := configFlag(fs)
	check := fs.Bool("check", false, "only list unformatted files; exit 1 if there are any")
	paths, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	var files []string
	lim := spec.DefaultLimits
	var red *spec.Redactor // the host config's secrets, when there is one
	if len(paths) == 0 {
		h, hfiles, diags := e.loadHost(*config, false)
		if diags.HasErrors() {
			renderDiagnosticsRedacted(e.stderr, hfiles, diags, hostRedactor(h))
			return exitError
		}
		lim, red = h.Limits, h.Redactor()
		files = append(files, h.File)
		specs, err := spec.SpecFiles(h.Source.Path)
		if err != nil {
			return e.errorf("%s", err)
		}
		files = append(files, specs...)
	} else {
		// The host config's limits apply when there is a valid one; fmt of
		// named files does not depend on it otherwise.
		if h, _, diags := e.loadHost(*config, true); !diags.HasErrors() {
			lim, red = h.Limits, h.Redactor()
		}
		for _, p := range paths {
			st, err := os.Stat(p)
			if err != nil {
				return e.errorf("%s", err)
			}
			if !st.IsDir() {
				files = append(files, p)
				continue
			}
			specs, err := spec.SpecFiles(p)
			if err != nil {
				return e.errorf("%s", err)
			}
			files = append(files, specs...)
		}
	}
	parser := hclparse.NewParser()
	var diags hcl.Diagnostics
	unformatted := 0
	for _, f := range files {
		src, err := spec.ReadFile(f, lim)
		if err != nil {
			diags = append(diags, spec.ReadDiagnostic("Cannot read file", f, err))
			continue
		}
		if d := spec.CheckSource(f, src, lim); d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		if _, d := parser.ParseHCL(src, f); d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		out := hclwrite.Format(src)
		if bytes.Equal(out, src) {
			continue
		}
		unformatted++
		fmt.Fprintln(e.stdout, displayPath(f))
		if *check {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return e.errorf("%s", err)
		}
		tmp := f + ".steward-fmt"
		if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
			return e.errorf("%s", err)
		}
		if err := os.Rename(tmp, f); err != nil {
			os.Remove(tmp)
			return e.errorf("%s", err)
		}
	}
	if len(diags) > 0 {
		renderDiagnosticsRedacted(e.stderr, parser.Files(), diags, red)
		return exitError
	}
	if *check && unformatted > 0 {
		verb := "are"
		if unformatted == 1 {
			verb = "is"
		}
		fmt.Fprintf(e.stderr, "%s %s not formatted; run \"steward fmt\" to fix.\n", plural(unformatted, "file"), verb)
		return exitError
	}
	return exitOK
}
