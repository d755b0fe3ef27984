package pgnotify

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		Batch: "Batch", Idle: "Idle", Dead: "Dead", Recovered: "Recovered", Lagged: "Lagged",
		0: "Kind(0)", 9: "Kind(9)",
	} {
		assert.Equal(t, want, k.String())
	}
}
