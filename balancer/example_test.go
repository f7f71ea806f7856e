package balancer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/balancer"
	"github.com/stargazer/lifecycle/registry"
)

// A client calls a service by its name; the balancer sends each request to
// one of its running instances, in turn.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg := registry.New(rdb)
	ctx := context.Background()

	// Two instances of "checkout", as the lifecycle registers them.
	for _, id := range []string{"checkout-1", "checkout-2"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s answers %s", id, r.URL.Path)
		}))
		defer srv.Close()
		addr := strings.TrimPrefix(srv.URL, "http://")
		_ = reg.Register(ctx, registry.Entry{Service: "checkout", Instance: id, Status: "running", Addr: addr})
	}

	if err := callCheckout(ctx, reg); err != nil {
		panic(err)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	// Output:
	// checkout-1 answers /cart/42
	// checkout-2 answers /cart/42
	// checkout-1 answers /cart/42
}

// callCheckout is what a client of checkout does: watch the service, wait for
// the watcher's first read of the registry (before it, the view is empty and
// a request fails with ErrNoInstance), and call it by its name.
func callCheckout(ctx context.Context, reg *registry.Registry) error {
	w, err := reg.Watch("checkout") // one XREAD reader of sg:events, resyncs from the index
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.WaitSynced(ctx); err != nil { // the first read of the registry
		return err
	}
	client := &http.Client{Transport: balancer.New(w).RoundTripper(nil)}
	for range 3 {
		resp, err := client.Get("http://checkout/cart/42") // round-robin over the running instances' addr
		if err != nil {
			return err
		}
		if err := printBody(resp); err != nil {
			return err
		}
	}
	return nil
}

// printBody prints a response's body and closes it.
func printBody(resp *http.Response) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
