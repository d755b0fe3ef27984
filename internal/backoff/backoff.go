// Package backoff is pgnotify's one reconnect backoff: a jittered
// exponential delay between attempts to reach the server, and one rule for
// when an outage is over and the delays start again from the shortest.
//
// The rule is a duty cycle. A connection that stayed up at least as long
// as the wait that preceded it (and at least Min) ends the outage: the next
// death starts again from Min, so a listener whose connections are killed
// every half second is deaf for a tenth of a second each time, not for ever
// longer. A connection that died sooner continues the outage: the next wait
// grows, so a server that accepts and then drops connections, or refuses
// them, gets at most one attempt per wait, and the wait saturates at Max.
package backoff

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults of a reconnect backoff: the first retry well under a second,
// and at most one attempt per few seconds against a server that stays
// down (about a dozen in 30 s; see the package's tests).
const (
	DefaultMin = 100 * time.Millisecond
	DefaultMax = 5 * time.Second
)

// Delay returns the wait before attempt n (from 0) of an outage: drawn with
// full jitter between min and min·2ⁿ, capped at max. Zero and negative
// bounds mean what they mean to [Bounds].
func Delay(min, max time.Duration, n int) time.Duration {
	min, max = Bounds(min, max)
	ceil := max
	if n >= 0 && n < 62 && min<<n > 0 && min<<n < max {
		ceil = min << n
	}
	return min + rand.N(ceil-min+1)
}

// Bounds applies the defaults, the same for every reconnect option:
// min <= 0 means DefaultMin, max <= 0 means DefaultMax, and a max below
// min means min (a constant wait).
func Bounds(min, max time.Duration) (time.Duration, time.Duration) {
	if min <= 0 {
		min = DefaultMin
	}
	if max <= 0 {
		max = DefaultMax
	}
	if max < min {
		max = min
	}
	return min, max
}

// A Backoff is the reconnect backoff of one connection: call Wait before
// each attempt, Up when an attempt succeeded and Down when that connection
// died. Its methods are safe from any goroutine. The zero Backoff is not
// valid: use New.
type Backoff struct {
	min, max time.Duration
	now      func() time.Time // time.Now; a test's clock

	mu      sync.Mutex
	attempt int           // the step of the next wait in the current outage
	last    time.Duration // the wait drawn last
	upAt    time.Time     // when the live connection was made; zero while down
}

// New returns a Backoff between min and max (see [Bounds] for zero and
// negative values).
func New(min, max time.Duration) *Backoff {
	min, max = Bounds(min, max)
	return &Backoff{min: min, max: max, now: time.Now}
}

// SetClock makes b read its time from now instead of time.Now: a test's
// simulated time. Call it before b is used.
func (b *Backoff) SetClock(now func() time.Time) { b.now = now }

// Next draws the wait before the next attempt and moves one step on.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := Delay(b.min, b.max, b.attempt)
	b.attempt++
	b.last = d
	return d
}

// Up records that an attempt succeeded: the connection is up from now.
func (b *Backoff) Up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.upAt = b.now()
}

// Down records that the connection made at the last Up died, and applies
// the reset rule: if it stayed up at least as long as the wait before it
// (and at least min), the outage that starts now begins again from min;
// otherwise it continues the last one, one step further.
func (b *Backoff) Down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.upAt.IsZero() {
		return
	}
	if b.now().Sub(b.upAt) >= max(b.last, b.min) {
		b.attempt = 0
	}
	b.upAt = time.Time{}
}

// Attempt returns the step the next wait will be drawn from (0 at the
// start of an outage).
func (b *Backoff) Attempt() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempt
}
