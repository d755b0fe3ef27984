package bus

import (
	"errors"

	"github.com/seed-c59d106d/pgnotify"
)

// The Bus returns [pgnotify.ErrClosed] after Close, and the root
// package's errors for bad channel names; the errors below have no
// sentinel: a program has nothing to do about them but fix the call or its
// configuration.
var (
	errNoChannels = errors.New("pgnotify/bus: subscribe: no channels")
	errNilConn    = errors.New("pgnotify/bus: ConnectFunc returned a nil connection")
	// errConcurrentNext is returned by a Next called while another
	// goroutine is inside Next of the same subscription: a subscription has
	// one reader, and two would split its stream between them.
	errConcurrentNext = errors.New("pgnotify/bus: Subscription.Next called from two goroutines at once")
	// errNotHeard is why a first connection is refused: its notifications
	// go to its config's OnNotification, where the Bus never sees them.
	errNotHeard = errors.New("pgnotify/bus: the connection did not hear its own NOTIFY: its config sets OnNotification " +
		"(a pgxpool.Config's ConnConfig, or a config copied from another connection's Config()): leave it nil in the config the ConnectFunc dials with")
)

// endedError is what a Bus that ended for good returns from Subscribe and
// its subscriptions' Next: it matches pgnotify.ErrClosed and unwraps to
// the cause (a closed pool).
type endedError struct {
	cause error
}

func (e *endedError) Error() string {
	return "pgnotify/bus: closed for good: its connections' source is closed (was the pool closed before the Bus?): " + e.cause.Error()
}

func (e *endedError) Unwrap() error { return e.cause }

// Is makes an endedError match pgnotify.ErrClosed as well as its cause.
func (e *endedError) Is(target error) bool { return target == pgnotify.ErrClosed }
