package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The health port's error names what sets it: WithHealthAddr in the library,
// SG_HEALTH_PORT (or SG_HEALTH_HOST for a host that is not this machine's)
// under Main, where the environment overrides the option, and the value.
func TestAHealthAddressThatCannotBeBoundNamesWhatSetsIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  func(port int) []Option // the instance's, its health port taken
		want  func(port int) string   // NAME="value" in the error
		errno syscall.Errno
	}{
		{"library, the option's port taken", func(port int) []Option { return []Option{WithHealthAddr(hostPort("127.0.0.1", port))} },
			func(port int) string { return fmt.Sprintf(`WithHealthAddr="127.0.0.1:%d"`, port) }, syscall.EADDRINUSE},
		{"Main, the option's port taken", func(port int) []Option { return []Option{WithHealthAddr(hostPort("127.0.0.1", port)), WithEnv(Env{})} },
			func(port int) string { return fmt.Sprintf(`SG_HEALTH_PORT="%d"`, port) }, syscall.EADDRINUSE},
		{"Main, SG_HEALTH_PORT's port taken", func(port int) []Option {
			return []Option{WithEnv(Env{HealthHost: "127.0.0.1", HealthHostSet: true, HealthPort: port, HealthPortSet: true})}
		}, func(port int) string { return fmt.Sprintf(`SG_HEALTH_PORT="%d"`, port) }, syscall.EADDRINUSE},
		{"Main, SG_HEALTH_HOST not this machine's", func(int) []Option {
			return []Option{WithEnv(Env{HealthHost: "192.0.2.1", HealthHostSet: true, HealthPort: 9, HealthPortSet: true})}
		}, func(int) string { return `SG_HEALTH_HOST="192.0.2.1"` }, syscall.EADDRNOTAVAIL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			port := l.Addr().(*net.TCPAddr).Port
			in, err := New(newTestService(), append([]Option{WithServiceName("orders")}, tc.opts(port)...)...)
			if err != nil {
				t.Fatal(err)
			}
			err = in.checkHealthAddr(context.Background())
			if !errors.Is(err, ErrConfig) || !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.want(port)) || !strings.Contains(err.Error(), "; set ") && !strings.Contains(err.Error(), "; give it") {
				t.Fatalf("checkHealthAddr = %v, want a ConfigError naming %s, %v, and what to do", err, tc.want(port), tc.errno)
			}
		})
	}
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
