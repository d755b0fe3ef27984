package main_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestStats: stats reports the queue usage as JSON for a script, and as a
// sentence for a person.
func TestStats(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	r := run(t, ctx, nil, "", "stats", "-d", dbURL(t, "postgres"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stats: exit %d, stderr %q", r.code, r.stderr)
	}
	var got struct {
		DB            string  `json:"db"`
		Usage         float64 `json:"usage"`
		CapacityBytes int64   `json:"capacity_bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stats output %q: %v", r.stdout, err)
	}
	if got.DB != label(t, "postgres") || got.Usage < 0 || got.Usage > 1 || got.CapacityBytes <= 0 {
		t.Errorf("stats: %+v", got)
	}

	r = run(t, ctx, nil, "", "stats", "-format", "text", "-d", dbURL(t, "postgres"))
	if r.code != 0 || !strings.Contains(r.stdout, "notification queue") || len(lines(r.stdout)) != 1 {
		t.Errorf("stats -format text: exit %d, output %q", r.code, r.stdout)
	}
}
