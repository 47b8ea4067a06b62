package main

import (
	"net"
	"testing"
)

// The netlink dump and /proc/net/tcp agree on a socket listening here.
func TestListeningDiag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	want := map[int]bool{port: true}
	d, err := listeningDiag(want)
	if err != nil {
		t.Fatal(err)
	}
	p, err := listeningProc(want)
	if err != nil {
		t.Fatal(err)
	}
	if d[port] == 0 || d[port] != p[port] {
		t.Fatalf("diag %v, /proc %v", d, p)
	}
	ln.Close()
	if d, _ := listeningDiag(want); len(d) != 0 {
		t.Fatalf("closed listener still reported: %v", d)
	}
}

func BenchmarkListeningDiag(b *testing.B) {
	for b.Loop() {
		listeningDiag(nil)
	}
}

func BenchmarkListeningProc(b *testing.B) {
	for b.Loop() {
		listeningProc(nil)
	}
}

func TestPercentile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(s, 50); p != 5 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(s, 95); p != 10 {
		t.Errorf("p95 = %v", p)
	}
}
