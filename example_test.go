package lifecycle_test

import (
	"context"
	"fmt"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// table is a job that may retry once: "fail" goes to retrying while the
// retries_left guard holds, and to failed once it does not.
var table = phases.Table{
	Name:    "job",
	Initial: "running",
	Groups:  []phases.GroupInfo{{Name: "job", Doc: "the job's life"}},
	States: []phases.StateInfo{
		{Name: "running", Group: "job", Doc: "an attempt is in progress"},
		{Name: "retrying", Group: "job", Doc: "an attempt failed; another follows"},
		{Name: "failed", Group: "job", Terminal: true, Doc: "out of attempts"},
	},
	Guards: []phases.GuardInfo{{Name: "retries_left", Doc: "an attempt is left"}},
	Transitions: []phases.Transition{
		{Event: "fail", From: []phases.State{"running"}, To: "retrying", Guard: phases.Guard{Name: "retries_left"}},
		{Event: "fail", From: []phases.State{"running"}, To: "failed", Guard: phases.Guard{Name: "retries_left", Not: true}},
		{Event: "retry", From: []phases.State{"retrying"}, To: "running"},
	},
}

type job struct{ left int }

func (j *job) retriesLeft() bool { return j.left > 0 }

// fail runs the job's machine from running through one failure.
func fail(ctx context.Context, job *job) (phases.State, error) {
	m, err := lifecycle.NewMachine(&table, lifecycle.WithGuard("retries_left", job.retriesLeft))
	if err != nil {
		return "", err
	}
	defer m.Close()
	err = m.Fire(ctx, "fail") // running -> retrying, or -> failed, as the guard decides
	return m.Current(), err
}

// The guard chooses between the two destinations of "fail".
func Example() {
	for _, j := range []*job{{left: 1}, {left: 0}} {
		state, err := fail(context.Background(), j)
		fmt.Println(j.left, "left:", state, err)
	}
	// Output:
	// 1 left: retrying <nil>
	// 0 left: failed <nil>
}
