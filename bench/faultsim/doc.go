// Command faultsim is steward's fault simulator: it brings up a scratch
// fleet, injects faults at random for a while, writes through the
// merchants the whole time, and then checks that steward converged and
// lost nothing. See bench/README.md.
//
//	go run ./bench/faultsim -duration 30m [-faults N] [-seed S] [-merchants 8] [-keep] [-v]
//
// Setup: a scratch directory (0755, since merchants run as nobody when
// faultsim is root), steward and steward-logshim built into it, the
// example invoicing app built as packages 1.0.0, 1.1.0 and a broken 1.2.0,
// one PostgreSQL database per merchant (named with a unique prefix,
// dropped at the end) reached through a tcpproxy each so that it can be
// cut, and `steward run` as a child process. As root the state directory
// lives on a small tmpfs so that it can be filled.
//
// The faults, picked at random from -seed (printed, so that a run can be
// replayed): merchant SIGKILL and SIGSTOP (SIGCONT later, or left to
// steward's health check), log shim SIGKILL, daemon SIGKILL (at random,
// mid-rollout after a version push, and mid-apply of `steward apply`
// while no daemon runs), database cuts and black holes, bad spec writes
// (or commits), a full disk under the state, and API floods. Every fault
// is restored after a while; whether its target came back is timed.
//
// At the end faultsim restores what is left, waits (bounded) for steward
// to converge and checks: every merchant running and healthy on the
// version the rollout policy holds for it; one process and one log shim
// per merchant, none stopped, no zombies of steward's; the pids in the
// state's records are the processes in /proc; every history event has a
// reason and a result, and no live process is recorded as exited; every
// acknowledged write is in the merchant's database exactly once. It prints
// a table of faults by kind and exits 1 on any violation.
package main
