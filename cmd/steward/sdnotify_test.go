package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := map[string]string{"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}
	getenv := func(k string) string { return env[k] }
	if err := sdNotify(getenv, "READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if d := watchdogInterval(getenv); d != 2*time.Second {
		t.Errorf("watchdog interval = %s, want 2s", d)
	}
	env["WATCHDOG_PID"] = "1"
	if d := watchdogInterval(getenv); d != 0 {
		t.Errorf("watchdog for another pid: %s", d)
	}
	if err := sdNotify(func(string) string { return "" }, "READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}
