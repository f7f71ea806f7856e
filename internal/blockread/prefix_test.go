package blockread_test

import (
	"context"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
)

// Prefix reads a value of up to limit bytes whole, names the size of a longer
// one without returning it, and finds nothing in an absent key or one that
// holds no string.
func TestPrefixReadsWhatFitsAndSizesWhatDoesNot(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	const limit = 8
	ctx := context.Background()
	mr.Set("short", "abc")
	mr.Set("exact", strings.Repeat("e", limit))
	mr.Set("long", strings.Repeat("l", 100))
	if _, err := mr.Lpush("list", "x"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key      string
		value    string
		found    bool
		oversize int64
	}{
		{"short", "abc", true, 0},
		{"exact", strings.Repeat("e", limit), true, 0},
		{"long", "", false, 100},
		{"absent", "", false, 0},
		{"list", "", false, 0},
	} {
		pipe := rdb.Pipeline()
		strlen := pipe.StrLen(ctx, tc.key)
		get := pipe.GetRange(ctx, tc.key, 0, limit-1)
		_, _ = pipe.Exec(ctx)
		v, found, size := blockread.Prefix(get, strlen, limit)
		if v != tc.value || found != tc.found || size != tc.oversize {
			t.Errorf("%s: Prefix = %q, %v, %d; want %q, %v, %d", tc.key, v, found, size, tc.value, tc.found, tc.oversize)
		}
	}
}
