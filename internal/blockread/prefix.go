package blockread

import "github.com/redis/go-redis/v9"

// Prefix decides what a string key held, read without loading more than
// limit bytes of it: get is GETRANGE key 0 limit-1 and strlen is STRLEN key,
// two commands of one pipeline that another client's write may come
// between. The range decides: shorter than limit, it is the whole value (a
// range past a value's end returns what there is); empty, or failed (not a
// string), nothing was there. Only a range of the full limit needs the
// length, to tell a value of exactly limit bytes from a longer one; when the
// two disagree (the value changed between them), it is taken as longer.
//
// It returns the value and true; or, for a value over limit, its size (at
// least limit+1) and false; or zero values when the key held no string.
func Prefix(get *redis.StringCmd, strlen *redis.IntCmd, limit int) (value string, found bool, oversize int64) {
	raw, err := get.Result()
	switch {
	case err != nil || raw == "":
		return "", false, 0
	case len(raw) < limit:
		return raw, true, 0
	}
	n, err := strlen.Result()
	if err == nil && n == int64(len(raw)) {
		return raw, true, 0
	}
	return "", false, max(n, int64(limit)+1)
}
