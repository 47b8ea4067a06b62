// Command probecost measures the CPU that steward's health monitor spends
// probing N merchants: it starts N HTTP listeners in a child process (the
// merchants' side, not counted), runs a probe.Monitor over them for a
// while, and prints the monitor's CPU as a share of one core and per probe.
//
//	go run ./bench/probecost -n 500 -interval 5s -for 30s
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"steward/probe"
)

func main() {
	n := flag.Int("n", 500, "merchants (listeners)")
	base := flag.Int("port-base", 31001, "first port")
	interval := flag.Duration("interval", 5*time.Second, "probe interval")
	warm := flag.Duration("warmup", 2*time.Second, "time before measuring")
	dur := flag.Duration("for", 30*time.Second, "measuring window")
	path := flag.String("path", "/health", `health path ("" for a TCP connect)`)
	serve := flag.Bool("serve", false, "internal: be the merchants")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measuring window to this file")
	workers := flag.Int("workers", 0, "probe.MonitorOptions.MaxConcurrent (0: the default)")
	flag.Parse()
	if *serve {
		serveAll(*n, *base)
		return
	}
	srv := exec.Command(os.Args[0], "-serve", "-n", strconv.Itoa(*n), "-port-base", strconv.Itoa(*base))
	srv.Stderr = os.Stderr
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		fail(err)
	}
	defer srv.Process.Kill()
	buf := make([]byte, 16)
	if _, err := out.Read(buf); err != nil { // "ready"
		fail(fmt.Errorf("server: %v", err))
	}

	var probes, failures atomic.Int64
	m := probe.NewMonitor(probe.New(), probe.MonitorOptions{MaxConcurrent: *workers, OnResult: func(r probe.Result) {
		probes.Add(1)
		if !r.Healthy {
			failures.Add(1)
		}
	}})
	for i := range *n {
		m.Set(probe.Target{ID: strconv.Itoa(i), Port: *base + i, HTTP: *path, Interval: *interval, Timeout: 2 * time.Second})
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	go m.Run(ctx)
	time.Sleep(*warm)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	c0, p0, t0 := cpu(), probes.Load(), time.Now()
	time.Sleep(*dur)
	c1, p1, t1 := cpu(), probes.Load(), time.Now()
	cancel()
	used := c1 - c0
	np := p1 - p0
	fmt.Printf("probecost: n=%d interval=%s path=%q: %d probes (%d failed) in %.1fs, CPU %.3fs = %.2f%% of a core, %.0f µs per probe\n",
		*n, *interval, *path, np, failures.Load(), t1.Sub(t0).Seconds(), used.Seconds(),
		100*used.Seconds()/t1.Sub(t0).Seconds(), float64(used.Microseconds())/float64(max(np, 1)))
}

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func serveAll(n, base int) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
		if err != nil {
			fail(err)
		}
		go http.Serve(l, h)
	}
	fmt.Println("ready")
	select {}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probecost:", err)
	os.Exit(1)
}
