package natsbridge_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLibraryBuildsWithoutNATS: nats.go is in the module's go.mod, but only
// a program that imports natsbridge compiles it. Every other package of the
// library (the root, durable, bus, pgtest, ... — everything but natsbridge,
// commands, examples and internal test machinery) must not depend on a
// nats-io package.
func TestLibraryBuildsWithoutNATS(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "github.com/seed-c59d106d/pgnotify/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var lib []string
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(p, "github.com/seed-c59d106d/pgnotify")
		switch {
		case strings.HasPrefix(rel, "/natsbridge"), strings.HasPrefix(rel, "/cmd/"),
			strings.HasPrefix(rel, "/examples/"), strings.HasPrefix(rel, "/internal/natstmp"):
			continue
		}
		lib = append(lib, p)
	}
	if len(lib) < 2 {
		t.Fatalf("found only %v: the package list is wrong", lib)
	}
	deps, err := exec.Command("go", append([]string{"list", "-deps"}, lib...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(deps)) {
		if strings.Contains(d, "nats-io") {
			t.Errorf("%s is compiled into a program that imports only %v", d, lib)
		}
	}
	t.Logf("checked %d packages: %v", len(lib), lib)
}
