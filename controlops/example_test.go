package controlops_test

import (
	"fmt"

	"github.com/stargazer/lifecycle/controlops"
)

// Rotating a key: the services hold "new,old" while the operators move to
// "new". Every listed key verifies; the result names which one did by its
// KeyID, never by the key.
func ExampleParseKeys() {
	keys, err := controlops.ParseKeys("new-key-0123456789abcdef,old-key-0123456789abcdef")
	if err != nil {
		fmt.Println(err)
		return
	}
	op := controlops.Op{ID: "op-1", Name: controlops.OpPull, Target: controlops.TargetAll, Nonce: "nonce-0001"}
	signedWithOld := controlops.Sign(keys[1], "billing", op)
	id, err := controlops.VerifyAny(keys, "billing", signedWithOld)
	fmt.Println(id == controlops.KeyID(keys[1]), err)

	_, err = controlops.ParseKeys("new-key-0123456789abcdef,short")
	fmt.Println(err)
	// Output:
	// true <nil>
	// controlops: invalid key: key 2 of 2 is 5 bytes: want at least 16, keys separated by commas
}
