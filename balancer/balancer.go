// Package balancer sends each request of a client to one of the running
// instances of a service, as a registry.Watcher sees them: round-robin over
// the instances that advertise an address (the registry entry's addr; see
// service.WithAdvertiseAddr and service.Advertiser).
//
//	w, err := reg.Watch("checkout") // one XREAD reader of sg:events, resyncs from the index
//	if err != nil {
//		return err
//	}
//	defer w.Close()
//	if err := w.WaitSynced(ctx); err != nil { // the first read of the registry
//		return err
//	}
//	client := &http.Client{Transport: balancer.New(w).RoundTripper(nil)}
//	for range 3 {
//		resp, err := client.Get("http://checkout/cart/42") // round-robin over the running instances' addr
//		if err != nil {
//			return err
//		}
//		if err := printBody(resp); err != nil {
//			return err
//		}
//	}
//
// (From the package's example, where printBody prints a body and closes it.)
// Until the watcher's first read of the registry (WaitSynced) its view is
// empty and requests fail with ErrNoInstance.
//
// The RoundTripper replaces each request URL's host with the address of the
// instance it picked; the Host header stays the URL's (here "checkout"). A
// request that never reached an instance because the dial failed (the
// connection was refused: the instance's listener closed before the watcher
// saw it leave running) is sent once more, to another instance, when it is
// idempotent: GET, HEAD, OPTIONS, TRACE, PUT or DELETE, or any method with an
// Idempotency-Key header, and without a body or with one it can send again
// (Request.GetBody, which http.NewRequest sets for in-memory bodies). Other
// failures are returned as they are: a request that reached an instance may
// have been acted upon.
//
// Instances that leave running (a drain, a stop or a restart) leave the
// watcher's view within one event's delivery, a few milliseconds: the
// balancer sends them nothing more. With a drain delay (SG_DRAIN_DELAY) that
// happens a whole delay before their listeners close, and a rolling restart
// fails no request. Without one, a service that serves until its last
// shutdown step (as examples/httpservice does, closing its listener in
// OnStop) still closes it after the watcher has seen it leave; one that
// closes it sooner may refuse the requests sent in between, and the retry
// covers those. BENCHMARKS.md has the measurement.
//
// Picking is lock-free: an atomic load of the watcher's view and an atomic
// counter. When no instance is running, or none advertises an address,
// requests fail at once with an error wrapping ErrNoInstance that says why.
package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/stargazer/lifecycle/registry"
)

// ErrNoInstance is wrapped by the error of a pick, or a request, made while
// the service has no running instance that advertises an address.
var ErrNoInstance = errors.New("balancer: no running instance to call")

// Balancer picks the instances of the service a Watcher watches, in turn.
// It is safe for concurrent use.
type Balancer struct {
	w    *registry.Watcher
	next atomic.Uint64
}

// New returns a Balancer over w's running instances. The caller keeps
// owning w (and closes it when done).
func New(w *registry.Watcher) *Balancer { return &Balancer{w: w} }

// Pick returns the next running instance that advertises an address,
// round-robin in instance id order, or an error wrapping ErrNoInstance.
func (b *Balancer) Pick() (registry.Instance, error) { return b.pick("") }

// pick is Pick, passing over instance skip when another can be had.
func (b *Balancer) pick(skip string) (registry.Instance, error) {
	ins := b.w.Running()
	n := 0
	for _, in := range ins {
		if in.Addr != "" && in.Instance != skip {
			n++
		}
	}
	if n == 0 {
		return registry.Instance{}, b.noInstance(ins, skip)
	}
	k := int((b.next.Add(1) - 1) % uint64(n))
	for _, in := range ins {
		if in.Addr == "" || in.Instance == skip {
			continue
		}
		if k == 0 {
			return in, nil
		}
		k--
	}
	panic("unreachable: counted n candidates")
}

// noInstance says why there is no instance to call.
func (b *Balancer) noInstance(ins []registry.Instance, skip string) error {
	v := b.w.View()
	svc := b.w.Service()
	switch {
	case skip != "" && len(ins) == 1:
		return fmt.Errorf("%w: service %q has no other running instance", ErrNoInstance, svc)
	case len(ins) > 0:
		return fmt.Errorf("%w: none of the %d running instances of service %q advertises an address", ErrNoInstance, len(ins), svc)
	case !v.Connected && v.At.IsZero():
		return fmt.Errorf("%w: service %q: the registry watcher has not read the registry yet", ErrNoInstance, svc)
	case !v.Connected:
		return fmt.Errorf("%w: service %q: none in the registry watcher's view, which cannot reach Redis since %s",
			ErrNoInstance, svc, v.At.UTC().Format("15:04:05.000"))
	}
	return fmt.Errorf("%w: service %q has no running instance", ErrNoInstance, svc)
}

// RoundTripper returns an http.RoundTripper that sends each request through
// base (http.DefaultTransport when nil) to the address of the instance Pick
// returns, and retries an idempotent request whose dial failed once on
// another instance (see the package documentation). Its errors name the
// instance and its address.
func (b *Balancer) RoundTripper(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{b: b, base: base}
}

type transport struct {
	b    *Balancer
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	in, err := t.b.Pick()
	if err != nil {
		closeBody(req)
		return nil, err
	}
	replayable := replayable(req)
	resp, err := t.base.RoundTrip(to(req, in))
	if err == nil {
		return resp, nil
	}
	err = fmt.Errorf("balancer: instance %s of %s at %s: %w", in.Instance, t.b.w.Service(), in.Addr, err)
	if !replayable || !dialFailed(err) || req.Context().Err() != nil {
		return nil, err
	}
	other, perr := t.b.pick(in.Instance)
	if perr != nil {
		return nil, err
	}
	retry := to(req, other)
	if req.Body != nil && req.Body != http.NoBody {
		if retry.Body, perr = req.GetBody(); perr != nil {
			return nil, fmt.Errorf("%w; not retried: GetBody: %w", err, perr)
		}
	}
	resp, rerr := t.base.RoundTrip(retry)
	if rerr != nil {
		return nil, fmt.Errorf("%w; retried on instance %s at %s: %w", err, other.Instance, other.Addr, rerr)
	}
	return resp, nil
}

// to returns a copy of req addressed to in. The body is shared.
func to(req *http.Request, in registry.Instance) *http.Request {
	r := req.Clone(req.Context())
	r.URL.Host = in.Addr
	if r.Host == "" {
		// Keep the Host header the caller's URL named, not the address.
		r.Host = req.URL.Host
	}
	return r
}

// replayable reports whether req may be sent again after its dial failed:
// an idempotent method (or an Idempotency-Key header), and a body that can
// be had again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		if req.Header.Get("Idempotency-Key") == "" && req.Header.Get("X-Idempotency-Key") == "" {
			return false
		}
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// dialFailed reports whether err is a failed dial: the request never left.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
