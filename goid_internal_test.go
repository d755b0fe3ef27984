package pgnotify

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestGoid(t *testing.T) {
	me := goid()
	assert.NotZero(t, me)
	assert.Equal(t, me, goid())
	other := make(chan uint64)
	go func() { other <- goid() }()
	assert.NotEqual(t, me, <-other)
}
