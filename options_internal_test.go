package pgnotify

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestOptionsDefaultsAndZeroValues(t *testing.T) {
	c := newConfig(nil)
	assert.Equal(t, NoTimeout, c.timeout)
	assert.Equal(t, defaultHealthEvery, c.healthEvery)
	assert.Equal(t, defaultMaxPending, c.maxPending)
	c = newConfig([]Option{WithTimeout(-5), WithMaxPending(0), WithHealthCheck(0, 0), WithReconnect(nil, 0, 0), nil})
	assert.Equal(t, NoTimeout, c.timeout)
	assert.Equal(t, defaultMaxPending, c.maxPending)
	assert.Equal(t, time.Duration(0), c.healthEvery, "every <= 0 turns health checks off")
	assert.Equal(t, defaultHealthTimeout, c.healthTimeout)
	assert.Equal(t, 100*time.Millisecond, c.reconnectMin, "min <= 0 means 100ms")
	assert.Equal(t, 5*time.Second, c.reconnectMax, "max <= 0 means 5s")
	assert.Equal(t, roundTripTimeout, (&config{}).roundTripTimeout())
}
