package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"steward/api"
)

// savedPlan is the file written by plan -out: the plan document and the
// host config it was made with. It holds no secrets.
type savedPlan struct {
	*api.Plan
	// Config is the host config the plan was made with.
	Config string `json:"config"`
}

func cmdPlan(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("plan", "", `
Compares the fleet specs with what steward has applied and what is running,
and shows the actions apply would take, each with its reason:

  +  create    a merchant steward has never run
  ~  start, restart, upgrade, rollback, stop
  -  delete    a merchant removed from the specs
  !  hold      not converged, but left alone for now (the reason says why:
               its database is down, a crash-loop backoff, suspended, pinned
               by steward rollback, a halted rollout)

Nothing is changed: plan installs no package, runs no package command and
writes no state. With -out the plan is saved for "steward apply FILE", which
refuses it if a merchant it touches or the specs changed in between.`)
	config := configFlag(fs)
	out := fs.String("out", "", "save the plan to `FILE` for a later apply")
	detailed := fs.Bool("detailed-exitcode", false, "exit 0 when there are no changes, 2 when there are, 1 on error")
	output := fs.String("o", "text", "output `format`: text or json")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return e.errorf("plan takes no arguments; got %q", pos)
	}
	if *output != "text" && *output != "json" {
		return e.errorf("-o must be text or json, not %q", *output)
	}
	l := e.load(ctx, *config)
	if l.diags.HasErrors() {
		l.renderDiags(e.stderr)
		fmt.Fprintf(e.stderr, "\n%s; no plan was made. Run \"steward validate\" after fixing it.\n", l.what())
		return exitError
	}
	a, err := e.openReader(ctx, l)
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	p, _ := makePlan(ctx, a, l)
	doc := api.PlanOf(p)
	if *out != "" {
		if err := writePlanFile(*out, &savedPlan{Plan: doc, Config: l.host.File}); err != nil {
			return e.errorf("saving the plan: %s", err)
		}
	}
	if *output == "json" {
		writeJSON(e.stdout, doc)
	} else {
		renderPlan(e.stdout, p)
		if *out != "" {
			fmt.Fprintf(e.stdout, "\nSaved the plan to %s. Apply exactly these actions with:\n  steward apply %s\n", *out, *out)
		}
	}
	if *detailed && p.HasChanges() {
		return exitChanges
	}
	return exitOK
}

func writePlanFile(path string, sp *savedPlan) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readPlanFile(path string) (*savedPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sp := &savedPlan{Plan: &api.Plan{}}
	if err := json.Unmarshal(b, sp); err != nil {
		return nil, fmt.Errorf("%s is not a saved plan: %v", path, err)
	}
	if sp.Format != api.PlanFormat {
		return nil, fmt.Errorf("%s has plan format %d; this steward reads format %d", path, sp.Format, api.PlanFormat)
	}
	return sp, nil
}
