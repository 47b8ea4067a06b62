package termsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text, tabs\tand\nnewlines", "plain text, tabs\tand\nnewlines"},
		{"\x1b]0;PWNED\x07\x1b[2J", `\x1b]0;PWNED\x07\x1b[2J`},
		{"over\rwrite", `over\rwrite`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m csi", `c1 \u009b31m csi`},
		{"ünïcödé ✓ stays", "ünïcödé ✓ stays"},
		{"\xc2", "\xc2"}, // a lone lead byte passes
		{"\xc2A", "\xc2A"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A C1 control split between writes is escaped all the same.
func TestWriterSplitC1(t *testing.T) {
	var b strings.Builder
	w := &Writer{W: &b}
	w.Write([]byte("a\xc2"))
	w.Write([]byte("\x9b31mb"))
	w.Flush()
	if got, want := b.String(), `a\u009b31mb`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Whatever goes in, no control character but newline and tab comes out,
// and printable text comes out unchanged.
func FuzzString(f *testing.F) {
	for _, s := range []string{"", "x", "\x1b[0m", "\xc2\x9b", "a\r\nb", "✓"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		for i := 0; i < len(out); i++ {
			c := out[i]
			if (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
				t.Fatalf("String(%q) = %q holds control byte %#x", s, out, c)
			}
			if c == 0xc2 && i+1 < len(out) && out[i+1] >= 0x80 && out[i+1] <= 0x9f {
				t.Fatalf("String(%q) = %q holds a C1 control", s, out)
			}
		}
		clean := true
		for _, r := range s {
			if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r >= 0x80 && r <= 0x9f || r == utf8.RuneError {
				clean = false
			}
		}
		if clean && out != s {
			t.Fatalf("String(%q) = %q changed clean text", s, out)
		}
	})
}
