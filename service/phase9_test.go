package service

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/phases"
)

func TestTakenHealthPortFailsPhase9NamingTheAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	f := newFixture(t)
	svc := newTestService()
	in, err := New(svc, f.options(WithHealthAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))))...)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)) || !strings.Contains(err.Error(), "serving_health") {
		t.Fatalf("Run = %v, want an error naming phase serving_health and the address", err)
	}
	if in.State() != phases.Failed || svc.onStop.Load() != 1 {
		t.Fatalf("state %q, OnStop %d; want failed, 1", in.State(), svc.onStop.Load())
	}
}

func TestInvalidHealthAddressIsAConfigurationError(t *testing.T) {
	_, err := New(newTestService(), WithHealthAddr("127.0.0.1:70000"))
	if err == nil || !strings.Contains(err.Error(), "70000") {
		t.Fatalf("New = %v, want an error naming the port", err)
	}
}
