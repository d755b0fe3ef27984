package main

// Drains from one real server run one after the other, and the position
// in that order matters: in the backlog scenario whichever implementation
// drained first in a repetition was 5–10 % slower than the same code later
// in the same repetition (lib/pq first 3.0–3.2 M/s, lib/pq fourth 3.2–3.5
// M/s, in one run; the cause is the server's, not the client's). So every
// scenario that times implementations in turn rotates the order with the
// repetition, and runs a multiple of the number of implementations by
// default, so that each takes each position equally often.

// turn returns the order of k implementations in repetition rep: a
// rotation, starting with implementation rep mod k.
func turn(rep, k int) []int {
	order := make([]int, k)
	for i := range order {
		order[i] = (rep + i) % k
	}
	return order
}

// fairReps rounds a default repetition count up to a multiple of k, the
// number of implementations taking turns; a count given with -reps stands.
func fairReps(cfg config, k int) int {
	if cfg.repsGiven || k <= 1 || cfg.reps%k == 0 {
		return cfg.reps
	}
	return (cfg.reps/k + 1) * k
}
