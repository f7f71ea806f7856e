package optrack_test

import (
	"fmt"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/registry"
)

// A drain goes to running instances only; the caller words the warnings.
func ExampleNewPlan() {
	live := []registry.Entry{
		{Service: "demo", Instance: "demo-1", Status: "running", Control: "signed"},
		{Service: "demo", Instance: "demo-2", Status: "draining", Control: "signed"},
		{Service: "demo", Instance: "demo-3", Status: "running", Control: "disabled"},
	}
	p, err := optrack.NewPlan("drain", "demo", "", live, true)
	if err != nil {
		panic(err)
	}
	fmt.Println("send to", p.Target, "- waits for", p.Instances, "until", p.Spec.Until)
	for _, w := range p.Warnings {
		switch w.Reason {
		case optrack.WrongStatus:
			fmt.Printf("%s is %s: it will not run the op\n", w.Entry.Instance, w.Entry.Status)
		case optrack.ControlDisabled:
			fmt.Printf("%s has control ops disabled: it will reject the op\n", w.Entry.Instance)
		}
	}
	// Output:
	// send to * - waits for [demo-1 demo-3] until draining
	// demo-2 is draining: it will not run the op
	// demo-3 has control ops disabled: it will reject the op
}
