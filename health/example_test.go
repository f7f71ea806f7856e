package health_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// state is a StateSource; in a service the lifecycle root package is one.
// What the state means (its role) and its doc come from the machine's table.
type state string

var table = phases.Lifecycle()

func (s state) Snapshot() health.Snapshot {
	info, _ := table.State(phases.State(s))
	return health.Snapshot{Service: "billing", Instance: "billing-1", State: string(s), Role: info.Role, Doc: info.Doc, Since: time.Now()}
}

func ExampleNew() {
	cacheDown := func(context.Context) error { return errors.New("memcached: connection refused") }
	srv, err := health.New(state("running"),
		health.WithAddr("127.0.0.1:0"),
		health.WithCheck("memcached:ping", cacheDown), // not required: healthz warns
	)
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown(context.Background())
	srv.Refresh(context.Background()) // Start does this, then every 5s

	for _, path := range []string{"/livez", "/readyz", "/healthz"} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// /livez 200 application/health+json
	// /readyz 200 application/health+json
	// /healthz 200 application/health+json
}

func ExampleNew_invalidAddr() {
	_, err := health.New(state("init"), health.WithAddr("127.0.0.1:99999"))
	fmt.Println(errors.Is(err, health.ErrInvalidAddr))
	fmt.Println(err)
	// Output:
	// true
	// health: invalid address "127.0.0.1:99999": port "99999" is not a number in [0, 65535]
}
