package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// config is what the flags set.
type config struct {
	duration     time.Duration
	faults       int
	seed         int64
	merchants    int
	keep         bool
	verbose      bool
	restartBlock bool
	source       string
	kinds        []kind
	interval     time.Duration
	fleetGap     time.Duration
	recoverBound time.Duration
	converge     time.Duration
	daemonNofile int
	floodConns   int
	workRoot     string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("faultsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: go run ./bench/faultsim -duration 30m [flags]\n\nInjects faults into a scratch steward fleet and checks that it converges and loses nothing.\n\n")
		fs.PrintDefaults()
	}
	fs.DurationVar(&c.duration, "duration", 0, "inject faults for this long (with -faults: whichever ends first)")
	fs.IntVar(&c.faults, "faults", 0, "inject this many faults (with -duration: whichever ends first)")
	fs.Int64Var(&c.seed, "seed", 0, "seed of the fault schedule (0: a random one, printed)")
	fs.IntVar(&c.merchants, "merchants", 8, "merchants in the fleet")
	fs.BoolVar(&c.keep, "keep", false, "keep the scratch directory (configs, state, logs) and the databases")
	fs.BoolVar(&c.verbose, "v", false, "print every fault as it is injected, restored and recovered")
	fs.BoolVar(&c.restartBlock, "restart-block", true, `write the fleet-wide restart block (restart { initial_delay = "100ms" max_delay = "2s" reset_after = "10s" }) into the specs`)
	fs.StringVar(&c.source, "source", "dir", "where the specs come from: dir (a watched directory) or git (a local repository)")
	kinds := fs.String("kinds", "all", "comma-separated fault kinds to inject ("+strings.Join(kindNames(), ", ")+")")
	fs.DurationVar(&c.interval, "interval", 300*time.Millisecond, "mean pause between two faults (exponentially distributed)")
	fs.DurationVar(&c.fleetGap, "fleet-gap", 10*time.Second, "least time between two fleet-wide faults of one group (daemon kills; disk-full; api-flood; bad-spec), from the end of one to the next")
	fs.DurationVar(&c.recoverBound, "recover", 30*time.Second, "a fault's target must be back within this bound (plus the restart backoff due)")
	fs.DurationVar(&c.converge, "converge", 2*time.Minute, "bound for the fleet to converge after the last fault is restored")
	fs.IntVar(&c.daemonNofile, "daemon-nofile", 1024, "RLIMIT_NOFILE of the daemon (0: inherited), so that an API flood can reach it")
	fs.IntVar(&c.floodConns, "flood-conns", 1500, "connections an API flood opens")
	fs.StringVar(&c.workRoot, "workdir", "", "parent of the scratch directory (default: the system's temporary directory)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.duration <= 0 && c.faults <= 0 {
		return c, fmt.Errorf("give -duration or -faults (or both)")
	}
	if c.merchants < 1 || c.merchants > 99 {
		return c, fmt.Errorf("-merchants must be between 1 and 99, not %d", c.merchants)
	}
	if c.source != "dir" && c.source != "git" {
		return c, fmt.Errorf("-source must be dir or git, not %q", c.source)
	}
	var err error
	if c.kinds, err = parseKinds(*kinds); err != nil {
		return c, err
	}
	if c.interval <= 0 || c.recoverBound <= 0 || c.converge <= 0 {
		return c, fmt.Errorf("-interval, -recover and -converge must be positive")
	}
	if c.seed == 0 {
		c.seed = time.Now().UnixNano()
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "faultsim: %v\n", err)
		return 2
	}
	res, err := simulate(ctx, c, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "faultsim: %v\n", err)
		return 1
	}
	if len(res.violations) > 0 {
		return 1
	}
	return 0
}
