package leakcheck

import "testing"

func TestFindSeesALeftGoroutine(t *testing.T) {
	if err := findWithin(0); err != nil {
		t.Fatalf("nothing left, but: %v", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { <-stop; close(done) }()
	if err := findWithin(0); err == nil {
		t.Fatal("a goroutine blocked on a channel was not found")
	}
	if code := After("leakcheck test")(0); code != 1 {
		t.Errorf("After turned 0 into %d with a goroutine left, want 1", code)
	}
	close(stop)
	<-done
	if code := After("leakcheck test")(3); code != 3 {
		t.Errorf("After changed 3 into %d with nothing left", code)
	}
}
