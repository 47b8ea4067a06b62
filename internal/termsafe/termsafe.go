// Package termsafe keeps text from others (a package's output, a merchant's
// log, a spec value) from driving the terminal it is printed on: control
// characters, which could clear the screen, retitle the window, write the
// clipboard or move the cursor over earlier lines, are shown escaped.
package termsafe

import (
	"fmt"
	"io"
	"strings"
)

// Writer passes what it is given to W with every control character except
// newline and tab shown as a Go escape ("\x1b", "\r", "\u009b"): C0
// controls, DEL and the C1 controls U+0080 to U+009F (UTF-8 C2 80 to C2
// 9F), which some terminals also obey. Other bytes, valid UTF-8 or not,
// pass unchanged. A C1 control split between two writes is still found.
type Writer struct {
	W io.Writer
	// pending is a 0xC2 byte at the end of the last write: the first half
	// of what may be a C1 control.
	pending bool
}

func (w *Writer) Write(p []byte) (int, error) {
	var b strings.Builder
	b.Grow(len(p) + 8)
	i := 0
	if w.pending {
		w.pending = false
		if len(p) > 0 && p[0] >= 0x80 && p[0] <= 0x9f {
			fmt.Fprintf(&b, `\u%04x`, p[0])
			i = 1
		} else {
			b.WriteByte(0xc2)
		}
	}
	for ; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\n' || c == '\t':
			b.WriteByte(c)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c == 0xc2 && i+1 == len(p):
			w.pending = true
		case c == 0xc2 && p[i+1] >= 0x80 && p[i+1] <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, p[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	if _, err := io.WriteString(w.W, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a held-back 0xC2 byte (call it when the output ends).
func (w *Writer) Flush() error {
	if !w.pending {
		return nil
	}
	w.pending = false
	_, err := w.W.Write([]byte{0xc2})
	return err
}

// String is s with its control characters escaped as Writer shows them.
func String(s string) string {
	var b strings.Builder
	w := &Writer{W: &b}
	w.Write([]byte(s))
	w.Flush()
	return b.String()
}
