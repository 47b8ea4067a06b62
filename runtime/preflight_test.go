package runtime

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged user the permission cases run as; they need
// root to start processes as another user.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// openTempDir returns a temporary directory that every user can reach
// (t.TempDir makes its directories 0700).
func openTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeExec(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask
		t.Fatal(err)
	}
}

// padEnv returns env strings "Vn=xxx..." taking n bytes in all, each
// string (with its NUL) at most MaxArgStrlen, plus one pointer each: what
// they cost execve, see checkArgs.
func padEnv(cost int64) []string {
	var env []string
	for i := 0; cost > 0; i++ {
		prefix := "V" + strconv.Itoa(i) + "="
		n := min(cost-8, MaxArgStrlen) - 1 // bytes of the string without its NUL
		if n < int64(len(prefix)) {
			// Too little left for a string: lengthen the previous one.
			last := env[len(env)-1]
			env[len(env)-1] = last[:len(last)-int(int64(len(prefix))-n)] // make room
			cost += int64(len(prefix)) - n
			continue
		}
		env = append(env, prefix+strings.Repeat("x", int(n)-len(prefix)))
		cost -= n + 1 + 8
	}
	return env
}

// rawStart starts s the way Start does, but without Preflight: what the
// kernel and os/exec say of it.
func rawStart(s Spec) error {
	path, err := s.resolve()
	if err != nil {
		return err
	}
	env := s.Env
	if env == nil {
		env = []string{}
	}
	cmd := &exec.Cmd{Path: path, Args: s.Argv, Env: env, Dir: "/",
		SysProcAttr: &syscall.SysProcAttr{Credential: s.Credential}}
	return cmd.Run()
}

func TestPreflight(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the permission cases start processes as another user: run as root")
	}
	dir := openTempDir(t)
	app := filepath.Join(dir, "rel", "bin", "app")
	writeExec(t, app, "#!/bin/sh\nexit 0\n", 0o755)
	rootOnly := filepath.Join(dir, "rel", "bin", "root-only")
	writeExec(t, rootOnly, "#!/bin/sh\nexit 0\n", 0o744)
	unreadableScript := filepath.Join(dir, "rel", "bin", "unreadable")
	writeExec(t, unreadableScript, "#!/bin/sh\nexit 0\n", 0o711)
	hidden := filepath.Join(dir, "private", "app")
	writeExec(t, hidden, "#!/bin/sh\nexit 0\n", 0o755)
	os.Chmod(filepath.Dir(hidden), 0o700)
	aFile := filepath.Join(dir, "file")
	writeExec(t, aFile, "", 0o644)
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}

	good := func() Spec {
		return Spec{Merchant: "acme", Argv: []string{app, "--port=8101"}, ReleaseDir: filepath.Join(dir, "rel"),
			WorkDir: filepath.Join(dir, "m", "work"), LogDir: filepath.Join(dir, "m", "logs"),
			Env: []string{"PORT=8101", "SECRET=hunter2"}, Credential: nobody}
	}
	limit := ArgLimit()
	atLimit := func(s *Spec) {
		// Everything but the environment, as checkArgs counts it.
		used := int64(len(trueBin)+1) + 8*int64(len(s.Argv))
		for _, a := range s.Argv {
			used += int64(len(a) + 1)
		}
		s.Env = padEnv(limit - used)
	}

	tests := []struct {
		name   string
		change func(s *Spec)
		want   string // in the error; "" when the spec is fine
		kernel bool   // execve refuses it too (checked without Preflight)
	}{
		{"fine", func(s *Spec) {}, "", false},
		{"fine as root", func(s *Spec) { s.Credential = nil; s.Argv[0] = rootOnly }, "", false},
		{"relative to the release", func(s *Spec) { s.Argv[0] = "bin/app" }, "", false},
		{"empty command", func(s *Spec) { s.Argv = nil }, "empty command", false},
		{"relative without release", func(s *Spec) { s.Argv[0] = "bin/app"; s.ReleaseDir = "" }, "no release dir", false},
		{"missing program", func(s *Spec) { s.Argv[0] = filepath.Join(dir, "nope") }, "no such file", true},
		{"program is a directory", func(s *Spec) { s.Argv[0] = dir }, "not a regular file", true},
		{"not executable by the user", func(s *Spec) { s.Argv[0] = rootOnly }, "may not execute " + rootOnly, true},
		{"script not readable by the user", func(s *Spec) { s.Argv[0] = unreadableScript }, "is a script and the merchant's user (uid 65534) may not read it", true},
		{"program out of the user's reach", func(s *Spec) { s.Argv[0] = hidden }, "may not search " + filepath.Dir(hidden), true},
		{"NUL in an argument", func(s *Spec) { s.Argv[1] = "--port=81\x0001" }, "argument 1 holds a NUL byte", true},
		{"NUL in the environment", func(s *Spec) { s.Env[1] = "SECRET=hun\x00ter2" }, "environment variable SECRET holds a NUL byte", true},
		{"argument at the kernel's limit", func(s *Spec) { s.Argv[1] = strings.Repeat("a", MaxArgStrlen-1) }, "", false},
		{"argument over the kernel's limit", func(s *Spec) { s.Argv[1] = strings.Repeat("a", MaxArgStrlen) }, "argument 1 is 131072 bytes, over the kernel's limit of 131071 bytes", true},
		{"env string over the kernel's limit", func(s *Spec) { s.Env[1] = "SECRET=" + strings.Repeat("a", MaxArgStrlen) }, "environment variable SECRET is 131079 bytes", true},
		{"environment exactly at the limit", func(s *Spec) { s.Argv = []string{trueBin}; atLimit(s) }, "", false},
		{"environment one byte over the limit", func(s *Spec) {
			s.Argv = []string{trueBin}
			atLimit(s)
			s.Env[len(s.Env)-1] += "x"
		}, "over the kernel's limit of " + strconv.FormatInt(limit, 10) + " bytes for a new program", true},
		{"release dir missing", func(s *Spec) { s.ReleaseDir = filepath.Join(dir, "gone"); s.Argv[0] = app }, "release dir: stat " + filepath.Join(dir, "gone"), false},
		{"release dir not readable by the user", func(s *Spec) { s.ReleaseDir = filepath.Dir(hidden) }, "release dir: the merchant's user (uid 65534) may not read and search", false},
		{"work dir not set", func(s *Spec) { s.WorkDir = "" }, "work dir is not set", false},
		{"log dir not set", func(s *Spec) { s.LogDir = "" }, "log dir is not set", false},
		{"work dir under a file", func(s *Spec) { s.WorkDir = filepath.Join(aFile, "work") }, "work dir: " + aFile + " is a regular file, not a directory", false},
		{"log dir is a file", func(s *Spec) { s.LogDir = aFile }, "log dir: " + aFile + " is a regular file, not a directory", false},
		{"work dir out of the user's reach", func(s *Spec) { s.WorkDir = filepath.Join(filepath.Dir(hidden), "w") }, "work dir: the merchant's user (uid 65534) may not search " + filepath.Dir(hidden), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			s.Argv = append([]string(nil), s.Argv...)
			s.Env = append([]string(nil), s.Env...)
			tc.change(&s)
			err := Preflight(s)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Preflight: %v", err)
				}
				if err := rawStart(s); err != nil {
					t.Fatalf("Preflight accepts what the kernel refuses: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "acme") {
				t.Fatalf("Preflight: %v\nwant an ErrPreflight naming acme and saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "hun\x00ter2") {
				t.Errorf("the error shows an environment value: %v", err)
			}
			// Start refuses it with the same error, before doing anything.
			_, serr := testRuntime(t).Start(context.Background(), s)
			if serr == nil || serr.Error() != err.Error() {
				t.Errorf("Start: %v\nwant Preflight's error %v", serr, err)
			}
			if s.LogDir != "" {
				if _, err := os.Stat(s.LogDir); err == nil && s.LogDir != aFile {
					t.Errorf("Start created the log dir of a refused spec")
				}
			}
			if tc.kernel {
				if err := rawStart(s); err == nil {
					t.Errorf("the kernel starts what Preflight refuses")
				} else {
					t.Logf("without Preflight: %v", err)
				}
			}
		})
	}
}
