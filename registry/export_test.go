package registry

// WithScriptText makes the registry send its scripts with their text (EVAL)
// instead of by SHA1 (EVALSHA), as it did before: benchmarks compare the two.
func WithScriptText() Option {
	return optionFunc(func(c *config) { c.scriptText = true })
}

// WithRand sets the source of the retry backoff's jitter: a function
// returning a float in [0, 1). Every Member's writer and every Watcher of the
// registry draws from it, each from its own goroutine: f must be safe for
// concurrent use when the registry has more than one of them (a
// (*rand.Rand).Float64 serves one). Nil is ignored.
func WithRand(f func() float64) Option {
	return optionFunc(func(c *config) {
		if f != nil {
			c.rand = f
		}
	})
}
