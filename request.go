package pgnotify

import (
	"sync/atomic"
)

// requestKind says who performs a request.
type requestKind uint8

const (
	// reqHandover lends the connection to the requesting goroutine (Do).
	reqHandover requestKind = iota
	// reqRoundTrip makes the waiter itself do a round trip (drain pass).
	reqRoundTrip
)

// A request's answer, moved with CAS so that a request is either taken by
// the waiter (or failed) or withdrawn by its caller, never both:
//
//	reqPending ──serve or fail──► reqAnswered   done receives one value
//	reqPending ──withdraw───────► reqWithdrawn  the caller stopped waiting
const (
	reqPending int32 = iota
	reqAnswered
	reqWithdrawn
)

// request is something another goroutine needs done on the connection.
// A Do's hand-over, as the two goroutines see it:
//
//	caller                              waiter
//	submit ────────────────────────────► takes it (reqAnswered)
//	<-done: nil ◄──────────────────────── done <- nil, then waits on released
//	runs fn with the connection
//	released <- fn's error ────────────► undoes what fn left (a transaction),
//	                                     publishes what pgx buffered (or dies)
//	<-done: what it undid ◄────────────── done <- what it undid
type request struct {
	kind  requestKind
	state atomic.Int32
	// done (cap 1) carries the waiter's answers: nil once it took the
	// request (for reqRoundTrip: once the round trip is over), or why it
	// will not serve it; for reqHandover, then a second one once what fn
	// left in pgx's buffer is published: what the waiter had to undo.
	done chan error
	// released (cap 1, reqHandover) carries fn's error back with the
	// connection.
	released chan error
}

func newRequest(kind requestKind) *request {
	r := &request{kind: kind, done: make(chan error, 1)}
	if kind == reqHandover {
		r.released = make(chan error, 1)
	}
	return r
}

// take is the waiter taking r. It reports false if r was withdrawn.
func (r *request) take() bool {
	return r.state.CompareAndSwap(reqPending, reqAnswered)
}

// fail answers a request that will not be served.
func (r *request) fail(err error) {
	if r.state.CompareAndSwap(reqPending, reqAnswered) {
		r.done <- err
	}
}

// withdraw takes back a request whose caller stopped waiting. It reports
// false if the waiter already took it, in which case done has (or will
// have) an answer the caller must honour.
func (r *request) withdraw() bool {
	return r.state.CompareAndSwap(reqPending, reqWithdrawn)
}
