package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"steward/internal/termsafe"
	"steward/runtime/logshim"
	"steward/source"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitChanges = 2 // plan -detailed-exitcode: the plan has changes
)

// env is what a command may touch of the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	name     string
	synopsis string
	run      func(ctx context.Context, e *env, args []string) int
	hidden   bool
}

func commands() []command {
	return []command{
		{name: "validate", synopsis: "Check the host config and fleet specs", run: cmdValidate},
		{name: "plan", synopsis: "Show what apply would change, and why", run: cmdPlan},
		{name: "apply", synopsis: "Converge the fleet on the specs (start, stop, restart, upgrade)", run: cmdApply},
		{name: "run", synopsis: "Run the daemon: reconcile continuously and self-heal", run: cmdRun},
		{name: "status", synopsis: "Show every merchant's state", run: cmdStatus},
		{name: "history", synopsis: "Show a merchant's recorded actions", run: cmdHistory},
		{name: "logs", synopsis: "Show or follow a merchant's log", run: cmdLogs},
		{name: "restart", synopsis: "Restart a merchant's process", run: cmdRestart},
		{name: "suspend", synopsis: "Leave a merchant exactly as it is until resumed", run: cmdSuspend},
		{name: "resume", synopsis: "Hand a suspended merchant back to steward", run: cmdResume},
		{name: "rollback", synopsis: "Return a merchant to its previous good version", run: cmdRollback},
		{name: "destroy", synopsis: "Stop every merchant (by its recorded process) and forget it", run: cmdDestroy},
		{name: "fmt", synopsis: "Rewrite spec files in canonical format", run: cmdFmt},
		{name: "version", synopsis: "Print steward's version", run: cmdVersion},
		{name: "__logshim", hidden: true, run: func(_ context.Context, e *env, args []string) int {
			return logshim.Run(args, e.stdin)
		}},
		{name: "__gitfetch", hidden: true, run: func(_ context.Context, e *env, _ []string) int {
			return source.RunFetchProcess(e.stdin, e.stdout, e.stderr)
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `steward keeps per-merchant web processes converged on declarative HCL specs.

Usage: steward COMMAND [flags] [args]

Commands:
`)
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.synopsis)
		}
	}
	fmt.Fprint(w, `
Every command takes -config FILE (default ./steward.hcl, or $STEWARD_CONFIG).
Run "steward COMMAND -help" for a command's flags.

Exit codes: 0 success; 1 error; 2 plan has changes (with -detailed-exitcode).
`)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return e.dispatch(ctx, args)
}

// termSafe is e with its output shown with control characters escaped
// (termsafe): what steward prints holds text from packages, merchants and
// specs, which must not drive the operator's terminal. With onlyTerminal
// (a merchant's log) output that is not a terminal passes unchanged.
func (e *env) termSafe(onlyTerminal bool) (*env, func()) {
	wrap := func(w io.Writer) (io.Writer, func()) {
		if f, ok := w.(*os.File); onlyTerminal && (!ok || !isTerminal(f)) {
			return w, func() {}
		}
		tw := &termsafe.Writer{W: w}
		return tw, func() { tw.Flush() }
	}
	c := *e
	var f1, f2 func()
	c.stdout, f1 = wrap(e.stdout)
	c.stderr, f2 = wrap(e.stderr)
	return &c, func() { f1(); f2() }
}

func (e *env) dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitError
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return e.dispatch(ctx, []string{args[1], "-help"})
		}
		usage(e.stdout)
		return exitOK
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			if c.hidden || name == "run" {
				// The log shim passes a merchant's output through as it
				// is; the daemon's structured logs quote what they hold.
				return c.run(ctx, e, args[1:])
			}
			safe, flush := e.termSafe(name == "logs")
			defer flush()
			return c.run(ctx, safe, args[1:])
		}
	}
	var names []string
	for _, c := range commands() {
		if !c.hidden {
			names = append(names, c.name)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(e.stderr, "steward: unknown command %q; commands are: %s\n", name, strings.Join(names, ", "))
	return exitError
}

// flagSet makes a subcommand's flag set with its usage text.
func (e *env) flagSet(name, args, help string) *flag.FlagSet {
	fs := flag.NewFlagSet("steward "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: steward %s [flags]%s\n\n%s\n", name, args, strings.TrimSpace(help))
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parse parses flags anywhere among the arguments ("logs acme -n 5" works
// like "logs -n 5 acme"). It returns the positional arguments, or ok=false
// with the exit code to return.
func parse(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	// A mistake gets its error and a pointer to the help, not the whole
	// help, which would scroll the error away.
	if !slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "--h" }) {
		full := fs.Usage
		fs.Usage = func() { fmt.Fprintf(fs.Output(), "Run \"%s -help\" for its flags and what it does.\n", fs.Name()) }
		defer func() { fs.Usage = full }()
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitError, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// configFlag adds -config to fs.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "host config `FILE` (default ./steward.hcl, or $STEWARD_CONFIG)")
}

// configPath resolves -config, $STEWARD_CONFIG and the default.
func (e *env) configPath(flagValue string) (path string, explicit bool) {
	if flagValue != "" {
		return flagValue, true
	}
	if v := e.getenv("STEWARD_CONFIG"); v != "" {
		return v, true
	}
	return "steward.hcl", false
}

// errorf prints an error line to stderr and returns exitError.
func (e *env) errorf(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "Error: "+format+"\n", args...)
	return exitError
}

// displayPath shortens p relative to the working directory when it is below it.
func displayPath(p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	rel, err := filepath.Rel(wd, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return p
	}
	return rel
}
