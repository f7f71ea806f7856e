package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// A password put in the user's place of REDIS_URL ("redis://s3cret@host")
// is a user name to go-redis: it was printed as one. Neither the exit-2
// message of a REDIS_URL that cannot work, nor the boot's log lines naming
// the Redis, show it.
func TestAPasswordInTheUserPlaceOfRedisURLIsNeverPrinted(t *testing.T) {
	const secret = "s3cretUserPlace"
	for _, url := range []string{
		"http://" + secret + "@127.0.0.1:6379",         // a wrong scheme: exit 2
		"redis://" + secret + "@127.0.0.1:6379/0?db=x", // a bad option: exit 2
		"redis://" + secret + "@127.0.0.1:bad%zz/0",    // does not parse: exit 2
		"redis://" + secret + ":p%zz@127.0.0.1:6379/0", // does not parse, with a password
	} {
		p := startDemo(t, "REDIS_URL="+url)
		if code := p.Wait(t); code != 2 {
			t.Errorf("REDIS_URL=%s: exit %d, want 2\n%s", url, code, p.Output())
		}
		out := p.Output()
		if !strings.Contains(out, "REDIS_URL") || !strings.Contains(out, "xxxxx@127.0.0.1") {
			t.Errorf("REDIS_URL=%s: the message does not name REDIS_URL with its userinfo masked:\n%s", url, out)
		}
		if strings.Contains(out, secret) {
			t.Errorf("REDIS_URL=%s: the output shows the userinfo:\n%s", url, out)
		}
	}

	// A URL that works (the server has no password, and go-redis sends no
	// AUTH without one): the boot names the Redis by its address only.
	srv := redistest.Server(t)
	p := startDemo(t, "REDIS_URL=redis://"+secret+"@"+srv.Addr()+"/0", "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=demo-1", "SG_HEALTH_HOST=127.0.0.1")
	p.WaitFor(t, "redis connection verified")
	if out := p.Output(); strings.Contains(out, secret) || !strings.Contains(out, "redis="+srv.Addr()) {
		t.Errorf("the boot log shows the userinfo, or does not name the Redis by its address:\n%s", out)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}
