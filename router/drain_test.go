package router

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseHexAddr(t *testing.T) {
	cases := []struct {
		in   string
		want string
		bad  bool
	}{
		{in: "0100007F:1F90", want: "127.0.0.1:8080"},
		{in: "00000000:0050", want: "0.0.0.0:80"},
		{in: "0500A8C0:D431", want: "192.168.0.5:54321"},
		{in: "00000000000000000000000001000000:1F90", want: "[::1]:8080"},
		{in: "0000000000000000FFFF00000100007F:1F90", want: "[::ffff:127.0.0.1]:8080"},
		{in: "0100007F", bad: true},
		{in: "0100007:1F90", bad: true},
		{in: "0100007F:XYZ", bad: true},
		{in: "01007F:1F90", bad: true},
	}
	for _, c := range cases {
		got, err := parseHexAddr([]byte(c.in))
		if c.bad {
			if err == nil {
				t.Errorf("%s: accepted as %v", c.in, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%s = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

func TestCountConnsIn(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
   4: 0100007F:9C42 0100007F:1F90 02 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   5: 0500A8C0:1F90 0600A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   6: 0100007F:1F91 0100007F:9C43 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 20 4 30 10 -1
`
	// Established both ends (lines 1, 2) and a connect in progress (4);
	// not the listener (0), TIME_WAIT (3), another address (5) or port (6).
	n, err := countConnsIn(strings.NewReader(tcp), 8080)
	if err != nil || n != 3 {
		t.Errorf("countConnsIn = %d, %v; want 3", n, err)
	}
	if _, err := countConnsIn(strings.NewReader("header\n 0: garbage\n"), 8080); err == nil {
		t.Error("a malformed line was accepted")
	}
}

// countConns sees a real connection and stops seeing it once closed.
func TestCountConnsLive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if n, err := countConns(port); err != nil || n != 0 {
		t.Fatalf("before connecting: %d, %v", n, err)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := countConns(port); err != nil || n != 2 {
		t.Errorf("with one connection: %d sockets, %v; want 2 (both ends)", n, err)
	}
	c.Close()
	s.Close()
	if n, err := countConns(port); err != nil || n != 0 {
		t.Errorf("after closing: %d, %v", n, err)
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (nginx: a) b) S 1 4242 4242 0 -1 4202560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.ppid != 1 || st.session != 4242 || st.start != 987654 {
		t.Errorf("parseStat = %+v", st)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
