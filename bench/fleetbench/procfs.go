package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"steward/runtime"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// It is 100 on every Linux configuration Go supports; main checks it
// against getconf when getconf is there.
var clockTicks = 100

// listeningPorts returns, for every TCP socket in LISTEN state on a port in
// want (nil: any port), the port and the socket inode: through sock_diag,
// or /proc/net/tcp when netlink is refused.
func listeningPorts(want map[int]bool) (map[int]uint64, error) {
	if out, err := listeningDiag(want); err == nil {
		return out, nil
	}
	return listeningProc(want)
}

func listeningProc(want map[int]bool) (map[int]uint64, error) {
	out := map[int]uint64{}
	var firstErr error
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			if firstErr == nil && f == "/proc/net/tcp" {
				firstErr = err
			}
			continue
		}
		parseListen(data, want, out)
	}
	return out, firstErr
}

// parseListen reads the lines of /proc/net/tcp{,6}:
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	0: 0100007F:7531 00000000:0000 0A ...
func parseListen(data []byte, want map[int]bool, out map[int]uint64) {
	first := true
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if first {
			first = false
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 10 || string(f[3]) != "0A" {
			continue
		}
		i := bytes.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		port, err := strconv.ParseUint(string(f[1][i+1:]), 16, 16)
		if err != nil || (want != nil && !want[int(port)]) {
			continue
		}
		inode, err := strconv.ParseUint(string(f[9]), 10, 64)
		if err != nil || inode == 0 {
			continue
		}
		out[int(port)] = inode
	}
}

// pidsOfSockets maps socket inodes to the pid holding them, by reading
// every /proc/PID/fd. A socket held by several processes maps to the
// lowest pid (merchants do not share their listening socket).
func pidsOfSockets(inodes map[uint64]bool) map[uint64]int {
	out := map[uint64]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(dir + "/" + fd.Name())
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
			if err != nil || !inodes[ino] {
				continue
			}
			if old, ok := out[ino]; !ok || pid < old {
				out[ino] = pid
			}
		}
	}
	return out
}

// portPIDs returns the pid listening on each port of ports that has one.
func portPIDs(ports []int) (map[int]int, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	ls, err := listeningPorts(want)
	if err != nil {
		return nil, err
	}
	inodes := map[uint64]bool{}
	for _, ino := range ls {
		inodes[ino] = true
	}
	byInode := pidsOfSockets(inodes)
	out := map[int]int{}
	for port, ino := range ls {
		if pid, ok := byInode[ino]; ok {
			out[port] = pid
		}
	}
	return out, nil
}

// cpuTicks returns utime+stime of pid (all its threads), in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. There, field 3 (state) is rest[0], so utime (14) is
	// rest[11] and stime (15) rest[12].
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	rest := strings.Fields(string(data[i+1:]))
	if len(rest) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseUint(rest[11], 10, 64)
	s, err2 := strconv.ParseUint(rest[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// statusKB returns a "Key:   N kB" field of /proc/PID/status (VmRSS, VmHWM).
func statusKB(pid int, key string) (int64, error) {
	return fieldKB(fmt.Sprintf("/proc/%d/status", pid), key)
}

// pssKB returns the proportional set size of pid, which splits pages
// shared between processes (the text of one binary run N times) among them.
func pssKB(pid int) (int64, error) {
	return fieldKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

func fieldKB(file, key string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s", file, key)
}

// cmdline returns the command line of pid with spaces between arguments.
func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// logShims returns the pids of steward's log shims for merchants under
// sub: steward-logshim processes, or steward itself run as "__logshim" when
// steward-logshim is not installed next to it.
func logShims(sub string) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		isShim := filepath.Base(string(args[0])) == "steward-logshim"
		hasSub := false
		for _, a := range args {
			isShim = isShim || string(a) == "__logshim"
			hasSub = hasSub || bytes.Contains(a, []byte(sub))
		}
		if isShim && hasSub {
			out = append(out, pid)
		}
	}
	return out
}

// machineBusySince returns a function that reports how busy all CPUs were
// (in percent of all of them) from now until it is called.
func machineBusySince() func() float64 {
	b0, t0, err := machineTicks()
	return func() float64 {
		b1, t1, err1 := machineTicks()
		if err != nil || err1 != nil || t1 == t0 {
			return -1
		}
		return float64(b1-b0) / float64(t1-t0) * 100
	}
}

// machineTicks returns the busy and total clock ticks of all CPUs so far,
// from the first line of /proc/stat (idle and iowait count as not busy).
func machineTicks() (busy, total uint64, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	var idle uint64
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already in user
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return total - idle, total, nil
}

// schedNS returns the CPU time of every thread of pid in nanoseconds, from
// /proc/PID/task/*/schedstat (finer than the 10ms ticks of stat).
func schedNS(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err == nil {
			sum += v
		}
	}
	return sum, nil
}

// childrenOf returns the children of pid as /proc lists them now, each
// with its start time (so that a later signal reaches that process only).
func childrenOf(pid int) []runtime.Proc {
	var out []runtime.Proc
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				if p, err := runtime.Inspect(c); err == nil {
					out = append(out, p)
				}
			}
		}
	}
	return out
}
