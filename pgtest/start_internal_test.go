package pgtest

import (
	"errors"
	"strings"
	"testing"
)

// TestStartErrorSaysWhatToInstall: pgtmp's error for missing binaries
// reaches the user without the internal package's name, and says what to do
// where apt-get is not the answer. (pgtmp's own tests check that the error
// is returned when the binaries are missing.)
func TestStartErrorSaysWhatToInstall(t *testing.T) {
	msg := startError(errors.New("pgtmp: PostgreSQL server binaries (initdb, pg_ctl) not found: " +
		"install them, e.g. `apt-get update && apt-get install -y postgresql`"))
	for _, want := range []string{"apt-get", "brew install", "PATH"} {
		if !strings.Contains(msg, want) {
			t.Errorf("startError = %q, want it to say %q", msg, want)
		}
	}
	if strings.Contains(msg, "pgtmp") {
		t.Errorf("startError = %q names the internal package", msg)
	}
}
