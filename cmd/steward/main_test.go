package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"steward/internal/app"
	"steward/runtime"
)

// TestMain lets the test binary impersonate steward: with STEWARD_TEST_MAIN
// set it runs the CLI (including the hidden log shim) instead of the tests,
// so integration tests run real steward processes without building one.
func TestMain(m *testing.M) {
	if os.Getenv("STEWARD_TEST_MAIN") == "1" {
		if n, err := strconv.ParseUint(os.Getenv("STEWARD_TEST_NOFILE"), 10, 64); err == nil {
			// A daemon with few descriptors (see TestHalfSentRequestsDoNotBlindTheDaemon).
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
				fmt.Fprintln(os.Stderr, "STEWARD_TEST_NOFILE:", err)
				os.Exit(1)
			}
		}
		// As main does: Ctrl-C and SIGTERM cancel the command.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if len(os.Args) > 1 && (os.Args[1] == "__logshim" || os.Args[1] == "__gitfetch") {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Geteuid() == 0 && os.Getenv("STEWARD_TEST_COPY") == "" {
		reexecFromReadableCopy()
	}
	if err := buildLogShim(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if dir := os.Getenv("STEWARD_TEST_COPY"); dir != "" {
		os.RemoveAll(dir)
	}
	if packagesDir != "" {
		os.RemoveAll(filepath.Dir(packagesDir))
	}
	os.Exit(code)
}

// reexecFromReadableCopy re-executes the test binary from a copy in a
// world-readable directory. As root, steward runs merchants and their log
// shims (this binary) as an unprivileged user, who cannot execute a binary
// inside go test's private build directory.
func reexecFromReadableCopy() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	dir, err := os.MkdirTemp("", "steward-test-bin-")
	if err != nil {
		return
	}
	os.Chmod(dir, 0o755)
	dst := filepath.Join(dir, filepath.Base(exe))
	b, err := os.ReadFile(exe)
	if err != nil || os.WriteFile(dst, b, 0o755) != nil {
		os.RemoveAll(dir)
		return
	}
	os.Setenv("STEWARD_TEST_COPY", dir)
	err = syscall.Exec(dst, append([]string{dst}, os.Args[1:]...), os.Environ())
	fmt.Fprintln(os.Stderr, "re-executing the test binary:", err)
	os.RemoveAll(dir)
}

// buildLogShim builds steward-logshim next to the test binary, where
// steward looks for it (app.ShimArgv), so that the integration tests' merchants
// log through the program a real installation uses. The fallback, steward
// itself as "__logshim", is covered by package runtime's tests.
func buildLogShim() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	out := filepath.Join(filepath.Dir(exe), app.LogShimName)
	if b, err := exec.Command("go", "build", "-o", out, "steward/cmd/steward-logshim").CombinedOutput(); err != nil {
		return fmt.Errorf("building %s for the integration tests: %v\n%s", app.LogShimName, err, b)
	}
	return nil
}

var packagesDir string

// examplePackages builds the example app's packages once per test binary.
func examplePackages(t *testing.T) string {
	return buildPackages(t, "packages")
}

// noDownPackages are the example packages with 1.2.0 declaring no down
// migration.
func noDownPackages(t *testing.T) string {
	return buildPackages(t, "nodown", "-no-down", "1.2.0")
}

var builtPackages = map[string]string{}

func buildPackages(t *testing.T, name string, args ...string) string {
	t.Helper()
	if dir := builtPackages[name]; dir != "" {
		return dir
	}
	if packagesDir == "" {
		tmp, err := os.MkdirTemp("", "steward-packages-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(tmp, 0o755)
		packagesDir = filepath.Join(tmp, "packages")
	}
	out := filepath.Join(filepath.Dir(packagesDir), name)
	cmd := exec.Command("go", append([]string{"run", "../../examples/pkgbuild", "-out", out, "-versions", "1.0.0,1.1.0,1.2.0"}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building example packages: %v\n%s", err, b)
	}
	builtPackages[name] = out
	return out
}

// shellPackage writes a package whose command is a shell script.
func shellPackage(t *testing.T, dir, name, version, script string) {
	t.Helper()
	manifest := `command = ["bin/app", "${port}"]
health { tcp = true }
`
	writeTarball(t, dir, name, version, map[string]string{"package.hcl": manifest, "bin/app": "#!/bin/sh\n" + script})
}

var runtimePortHolder = runtime.PortHolder
