package service

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// advertisingService advertises addr once OnStart has run; reading it before
// is a bug the test catches.
type advertisingService struct {
	testService
	addr    string
	started bool
	asked   int
}

func (s *advertisingService) OnStart(ctx context.Context) error {
	s.started = true
	return s.testService.OnStart(ctx)
}

func (s *advertisingService) AdvertiseAddr() string {
	s.asked++
	if !s.started {
		return "asked-before-OnStart:1"
	}
	return s.addr
}

// bootedEntry boots in and returns its registry entry.
func bootedEntry(t *testing.T, f *fixture, in *Instance) registry.Entry {
	t.Helper()
	if err := in.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Shutdown(context.Background()) })
	e, err := registry.New(f.client).Entry(t.Context(), "svc", "i-1")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAdvertiserAddressReadOnceAfterOnStartIsInTheEntry(t *testing.T) {
	f := newFixture(t)
	svc := &advertisingService{testService: *newTestService(), addr: "127.0.0.1:41234"}
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	e := bootedEntry(t, f, in)
	if e.Addr != svc.addr || in.AdvertisedAddr() != svc.addr {
		t.Errorf("entry addr %q, AdvertisedAddr %q, want %q", e.Addr, in.AdvertisedAddr(), svc.addr)
	}
	if svc.asked != 1 {
		t.Errorf("AdvertiseAddr called %d times, want once", svc.asked)
	}
}

func TestWithAdvertiseAddrWinsOverTheServicesAddress(t *testing.T) {
	f := newFixture(t)
	svc := &advertisingService{testService: *newTestService(), addr: "127.0.0.1:41234"}
	in, err := New(svc, f.options(WithAdvertiseAddr("10.0.0.7:8080"))...)
	if err != nil {
		t.Fatal(err)
	}
	if e := bootedEntry(t, f, in); e.Addr != "10.0.0.7:8080" {
		t.Errorf("entry addr %q, want the configured 10.0.0.7:8080", e.Addr)
	}
	if svc.asked != 0 {
		t.Errorf("AdvertiseAddr called %d times, want never: an address is configured", svc.asked)
	}
}

func TestWithoutAnAddressNothingIsAdvertised(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	bootedEntry(t, f, in)
	raw, err := f.client.Get(t.Context(), registry.EntryKey("svc", "i-1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw, `"addr"`) {
		t.Errorf("entry carries an addr field: %s", raw)
	}
}

func TestWithAdvertiseAddrRefusesWhatAClientCannotCall(t *testing.T) {
	for _, bad := range []string{"8080", ":8080", "0.0.0.0:8080", "[::]:8080", "api:0", "api"} {
		_, err := New(newTestService(), WithAdvertiseAddr(bad))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Name != "WithAdvertiseAddr" || ce.Value != bad {
			t.Errorf("WithAdvertiseAddr(%q): %v, want a *ConfigError naming the option and the value", bad, err)
		}
	}
}

func TestAnAdvertiserReturningABadAddressFailsPhaseEightNamingIt(t *testing.T) {
	f := newFixture(t)
	svc := &advertisingService{testService: *newTestService(), addr: "0.0.0.0:8080"}
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Boot(t.Context())
	if err == nil || !strings.Contains(err.Error(), `Advertiser.AdvertiseAddr returned "0.0.0.0:8080"`) || !strings.Contains(err.Error(), string(phases.Registering)) {
		t.Fatalf("Boot: %v, want phase registering failing, naming the address", err)
	}
	if s := in.State(); s != phases.Failed {
		t.Errorf("state %s, want failed", s)
	}
}
