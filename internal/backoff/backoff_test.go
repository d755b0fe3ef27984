package backoff

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestDelayStaysWithinItsStep(t *testing.T) {
	const min, max = 100 * time.Millisecond, 5 * time.Second
	for n := range 80 {
		ceil := max
		if n < 62 && min<<n > 0 && min<<n < max {
			ceil = min << n
		}
		for range 200 {
			d := Delay(min, max, n)
			if d < min || d > ceil {
				t.Fatalf("Delay(%v, %v, %d) = %v, want within [%v, %v]", min, max, n, d, min, ceil)
			}
		}
	}
	if d := Delay(0, 0, 0); d != DefaultMin {
		t.Errorf("Delay(0, 0, 0) = %v, want DefaultMin", d)
	}
	if d := Delay(time.Second, time.Millisecond, 5); d != time.Second {
		t.Errorf("max < min: Delay = %v, want min", d)
	}
	if d := Delay(time.Hour, 1<<62, 61); d < time.Hour || d > 1<<62 {
		t.Errorf("huge bounds: Delay = %v", d)
	}
}

func TestBoundsDefaults(t *testing.T) {
	for _, tc := range []struct{ min, max, wantMin, wantMax time.Duration }{
		{0, 0, DefaultMin, DefaultMax},
		{-1, -1, DefaultMin, DefaultMax},
		{time.Second, 0, time.Second, DefaultMax},
		{0, time.Second, DefaultMin, time.Second},
		{time.Second, time.Millisecond, time.Second, time.Second},
		{time.Minute, 0, time.Minute, time.Minute},
	} {
		lo, hi := Bounds(tc.min, tc.max)
		if lo != tc.wantMin || hi != tc.wantMax {
			t.Errorf("Bounds(%v, %v) = %v, %v; want %v, %v", tc.min, tc.max, lo, hi, tc.wantMin, tc.wantMax)
		}
	}
}

// clock is a test's time: the Backoff reads it, the simulation moves it.
type clock struct{ now time.Time }

func newTestBackoff(min, max time.Duration) (*Backoff, *clock) {
	c := &clock{now: time.Unix(0, 0)}
	b := New(min, max)
	b.now = func() time.Time { return c.now }
	return b, c
}

func TestDownResetsOnlyAfterALongEnoughLife(t *testing.T) {
	b, c := newTestBackoff(100*time.Millisecond, 5*time.Second)
	for range 5 {
		b.Next()
	}
	if b.Attempt() != 5 {
		t.Fatalf("Attempt = %d after five waits", b.Attempt())
	}
	last := b.last
	b.Up()
	c.now = c.now.Add(last - time.Millisecond)
	b.Down()
	if b.Attempt() != 5 {
		t.Errorf("a connection that lived less than its wait reset the backoff (Attempt %d)", b.Attempt())
	}
	b.Next()
	b.Up()
	c.now = c.now.Add(b.last)
	b.Down()
	if b.Attempt() != 0 {
		t.Errorf("a connection that lived as long as its wait did not reset the backoff (Attempt %d)", b.Attempt())
	}
	b.Down() // no Up since: nothing changes
	if b.Attempt() != 0 {
		t.Errorf("Down without Up changed Attempt to %d", b.Attempt())
	}
}

// storm simulates a listener whose connection is killed at random every
// 0.3–0.7 s for 20 s, each dial taking 5 ms, and returns how long each
// outage lasted (death to connection). oldRule applies the reset rule the
// Manager and the Bus had before: the step starts again from 0 only after
// a connection stayed up for max (at least 10 s).
func storm(rng *rand.Rand, lo, hi time.Duration, oldRule bool) []time.Duration {
	b, c := newTestBackoff(lo, hi)
	const dial = 5 * time.Millisecond
	end := c.now.Add(20 * time.Second)
	nextKill := func() time.Time {
		return c.now.Add(300*time.Millisecond + time.Duration(rng.Int64N(int64(400*time.Millisecond))))
	}
	b.Up()
	upAt := c.now
	kill := nextKill()
	var outages []time.Duration
	for kill.Before(end) {
		c.now = kill
		died := c.now
		if oldRule {
			if c.now.Sub(upAt) >= max(hi, 10*time.Second) {
				b.attempt = 0
			}
		} else {
			b.Down()
		}
		c.now = c.now.Add(b.Next() + dial)
		b.Up()
		upAt = c.now
		outages = append(outages, c.now.Sub(died))
		kill = nextKill()
	}
	return outages
}

// TestStormKeepsOutagesShort: under repeated kills the reset rule keeps
// every outage at the first step (min plus the dial), where the old rule
// let them grow to max.
func TestStormKeepsOutagesShort(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 2))
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		old      bool
	}{
		{"defaults", DefaultMin, DefaultMax, false},
		{"old defaults, old rule", 100 * time.Millisecond, 15 * time.Second, true},
	} {
		out := storm(rng, tc.min, tc.max, tc.old)
		var deaf time.Duration
		for _, d := range out {
			deaf += d
		}
		worst := slices.Max(out)
		t.Logf("%s: %d outages in 20 s, longest %v, deaf %.1f%% of the time",
			tc.name, len(out), worst.Round(time.Millisecond), 100*deaf.Seconds()/20)
		if !tc.old && worst > tc.min+10*time.Millisecond {
			t.Errorf("%s: an outage of %v under a storm of kills; want each at the first step", tc.name, worst)
		}
	}
}

// downFor simulates a server that refuses connections for down (each
// refusal takes 1 ms) and returns the attempts made until one succeeded,
// and how long after the server came back that was.
func downFor(min, max, down time.Duration) (attempts int, late time.Duration) {
	b, c := newTestBackoff(min, max)
	back := c.now.Add(down)
	b.Down()
	for {
		c.now = c.now.Add(b.Next())
		attempts++
		if !c.now.Before(back) {
			return attempts, c.now.Sub(back)
		}
		c.now = c.now.Add(time.Millisecond)
	}
}

// TestServerDownIsNotHammered: against a server that refuses connections
// for 30 s, the defaults make about a dozen attempts, never dozens, and
// reconnect within Max of its return.
func TestServerDownIsNotHammered(t *testing.T) {
	const trials = 1000
	var counts []int
	var lates []time.Duration
	for range trials {
		n, late := downFor(DefaultMin, DefaultMax, 30*time.Second)
		counts = append(counts, n)
		lates = append(lates, late)
	}
	slices.Sort(counts)
	slices.Sort(lates)
	t.Logf("server down 30 s, %d trials: attempts min %d, median %d, max %d; reconnected after its return: median %v, max %v",
		trials, counts[0], counts[trials/2], counts[trials-1],
		lates[trials/2].Round(time.Millisecond), lates[trials-1].Round(time.Millisecond))
	if counts[trials-1] > 40 {
		t.Errorf("up to %d attempts in 30 s against a server that refuses them", counts[trials-1])
	}
	if lates[trials-1] > DefaultMax {
		t.Errorf("reconnected %v after the server came back, more than Max", lates[trials-1])
	}
}
