package redisacl_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(proctest.Main(m))
}
