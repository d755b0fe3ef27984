package durable

// WithMaxPending lowers the read-ahead bounds, so tests reach them.
func WithMaxPending(items, bytes int) Option {
	return func(c *config) {
		c.maxPendingItems, c.maxPendingBytes = items, bytes
	}
}

// InNext reports whether a goroutine is inside s.Next.
func InNext(s *Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inNext
}
