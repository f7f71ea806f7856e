package registry

// WithScriptText makes the registry send its scripts with their text (EVAL)
// instead of by SHA1 (EVALSHA), as it did before: benchmarks compare the two.
func WithScriptText() Option {
	return optionFunc(func(c *config) { c.scriptText = true })
}
