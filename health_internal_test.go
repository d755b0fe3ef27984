package pgnotify

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The queue warning is logged once per rise: not again while the queue
// stays high or hovers at the threshold, again after it fell well below.
func TestQueueWarningOncePerRise(t *testing.T) {
	var log bytes.Buffer
	m := NewManager(WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	who := func() []any { return []any{"pid", 7} }
	warnings := func() int { return strings.Count(log.String(), "notification queue is filling") }

	for _, step := range []struct {
		usage float64
		want  int
	}{
		{0, 0}, {0.3, 0}, {0.5, 1}, {0.7, 1}, {0.49, 1}, {0.5, 1}, // a hover is one rise
		{0.2, 1}, {0.55, 2}, {0.9, 2}, // fell below the re-arm level, rose again
	} {
		m.sampleQueue(step.usage, who)
		if got := warnings(); got != step.want {
			t.Fatalf("after a sample of %v: %d warnings, want %d\n%s", step.usage, got, step.want, log.String())
		}
		if got := m.Stats().QueueUsage; got != step.usage {
			t.Fatalf("Stats().QueueUsage = %v, want the latest sample %v", got, step.usage)
		}
	}
	if !strings.Contains(log.String(), "NOTIFY fails once it is full") || !strings.Contains(log.String(), "pid=7") {
		t.Errorf("the warning names neither the risk nor the connection:\n%s", log.String())
	}
}
