package runtime

import (
	"errors"
	"io/fs"
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24"
	for _, tc := range []struct {
		name, line string
		want       procStat
	}{
		{"plain", "42 (bash) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1000 200", procStat{'S', 1, 42, 42, 987654}},
		{"spaces", "42 (my app worker) R 7 8 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 1 2", procStat{'R', 7, 8, 9, 55}},
		{"parens", "42 (a) b) (c) Z 7 8 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 66 1 2" + tail, procStat{'Z', 7, 8, 9, 66}},
		{"paren space state", "42 () S 1 2 3) T 7 8 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 1 2\n", procStat{'T', 7, 8, 9, 77}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "42 bash S 1", "42 (bash) S 1 2 3", "42 (x) SS 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 1", "42 (x) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 1"} {
		if st, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = %+v, want an error", bad, st)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (bash) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1000 200"))
	f.Add([]byte("1 (a) b)) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 1 2"))
	f.Add([]byte("7 ((((( Z"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			return
		}
		if st.State == ' ' || st.State == ')' {
			t.Errorf("state %q from %q", st.State, b)
		}
	})
}

func TestInspectSelf(t *testing.T) {
	p, err := Inspect(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.StartTime == 0 || !p.Alive() {
		t.Fatalf("Inspect(self) = %+v, alive %v", p, p.Alive())
	}
	again, _ := Inspect(os.Getpid())
	if again != p {
		t.Errorf("identity changed: %v then %v", p, again)
	}
	if (Proc{PID: p.PID, StartTime: p.StartTime + 1}).Alive() {
		t.Error("a wrong start time is alive")
	}
	if _, err := Inspect(1 << 30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Inspect(no such pid) error %v, want fs.ErrNotExist", err)
	}
	if (Proc{PID: 1 << 30, StartTime: 1}).Alive() {
		t.Error("a missing pid is alive")
	}
}

func BenchmarkInspect(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		if _, err := Inspect(pid); err != nil {
			b.Fatal(err)
		}
	}
}
