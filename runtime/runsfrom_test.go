package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RunsFrom tells a process of one release from one of another: by its
// executable, or by the script an interpreter runs.
func TestRunsFrom(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(a, "app")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(a, "app.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 30 | cat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{bin, "30"}, {script}} {
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p, err := Inspect(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if !RunsFrom(p, a) {
			t.Errorf("%v: RunsFrom its own release dir = false", argv)
		}
		if RunsFrom(p, b) {
			t.Errorf("%v: RunsFrom another release dir = true", argv)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}
