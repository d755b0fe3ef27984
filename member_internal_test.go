package pgnotify

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// bareMember is a member with no connection or waiter, for the life
// transitions alone (none of them touches the connection unless reading).
func bareMember() *member {
	return &member{own: NewManager(), wake: make(chan struct{}, 1)}
}

// The transitions out of stateLive, and what requests fail with after each.
func TestMemberLifeTransitions(t *testing.T) {
	t.Run("remove", func(t *testing.T) {
		w := bareMember()
		w.requestStop()
		assert.Equal(t, stateStopping, w.state)
		assert.ErrorIs(t, w.unusableLocked(), ErrNotManaged)
		assert.False(t, w.closeOnExit, "a Remove takes the connection back")
		assert.True(t, w.giveUpLocked(), "a Remove that gives up leaves the connection to the waiter to close")
		assert.True(t, w.closeOnExit)
	})
	t.Run("close", func(t *testing.T) {
		w := bareMember()
		r := newRequest(reqRoundTrip)
		assert.NoError(t, w.submit(r))
		lent, ours, _ := w.stopForClose()
		assert.False(t, lent)
		assert.True(t, ours)
		assert.Equal(t, stateStopping, w.state)
		assert.ErrorIs(t, <-r.done, ErrClosed, "queued requests fail at once")
		assert.ErrorIs(t, w.submit(newRequest(reqRoundTrip)), ErrClosed)
	})
	t.Run("close during remove", func(t *testing.T) {
		w := bareMember()
		w.requestStop()
		_, ours, _ := w.stopForClose()
		assert.False(t, ours, "the connection stays the Remove's")
		assert.ErrorIs(t, w.unusableLocked(), ErrClosed)
	})
	t.Run("close while lent", func(t *testing.T) {
		w := bareMember()
		w.doing, w.borrower = doingLend, 7
		lent, _, borrower := w.stopForClose()
		assert.True(t, lent, "Close cuts the Do function's query and waits for it")
		assert.EqualValues(t, 7, borrower, "unless Close is called from inside it")
	})
	t.Run("dead stays dead", func(t *testing.T) {
		w := bareMember()
		cause := errors.New("boom")
		w.state, w.cause = stateDead, cause
		w.requestStop()
		_, ours, _ := w.stopForClose()
		assert.False(t, ours)
		assert.Equal(t, stateDead, w.state)
		assert.ErrorIs(t, w.unusableLocked(), ErrDead)
		assert.ErrorIs(t, w.unusableLocked(), cause)
		assert.False(t, w.giveUpLocked())
	})
}
