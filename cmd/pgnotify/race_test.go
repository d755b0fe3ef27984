//go:build race

package main_test

// raceEnabled builds the binary under test with -race when the tests run
// with it, so the tool's own goroutines are checked too.
const raceEnabled = true
