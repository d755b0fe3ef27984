package pgnotify

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffStaysWithinBounds(t *testing.T) {
	min, max := 10*time.Millisecond, time.Second
	for n := range 80 {
		ceil := max
		if n < 7 {
			ceil = min << n
		}
		for range 50 {
			d := backoff(min, max, n)
			assert.GreaterOrEqual(t, d, min, "attempt %d", n)
			assert.LessOrEqual(t, d, ceil, "attempt %d", n)
		}
	}
}
