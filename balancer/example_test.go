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

	w, err := reg.Watch("checkout")
	if err != nil {
		panic(err)
	}
	defer w.Close()
	_ = w.WaitSynced(ctx)
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: balancer.New(w).RoundTripper(base)}
	for range 3 {
		resp, err := client.Get("http://checkout/cart/42")
		if err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(b))
	}
	// Output:
	// checkout-1 answers /cart/42
	// checkout-2 answers /cart/42
	// checkout-1 answers /cart/42
}
