package durable

// WithMaxPending lowers the read-ahead bounds, so tests reach them.
func WithMaxPending(items, bytes int) Option {
	return func(c *config) {
		c.maxPendingItems, c.maxPendingBytes = items, bytes
	}
}
