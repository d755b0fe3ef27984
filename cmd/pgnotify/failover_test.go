package main_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// TestListenFollowsPromotedStandby: listen given a multi-host connection
// string with target_session_attrs=read-write follows a failover. The
// primary stopped, it prints a dead line; the standby promoted, a
// recovered line with the same label; then the notification sent on the
// new primary.
func TestListenFollowsPromotedStandby(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	startCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary, err := pgtmp.Start(startCtx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := primary.Stop(); err != nil {
			t.Error(err)
		}
	})
	replica, err := primary.StartReplica(startCtx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := replica.Stop(); err != nil {
			t.Error(err)
		}
	})

	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), replica.Port())
	db := fmt.Sprintf("127.0.0.1:%d/postgres", primary.Port())
	l := startListen(t, ctx, nil, "-d", url, "failover")

	if err := primary.Stop(); err != nil {
		t.Fatal(err)
	}
	dead := l.nextJSON(ctx)
	if dead["event"] != "dead" || dead["db"] != db {
		t.Fatalf("line %v: want a dead event from %s", dead, db)
	}
	t.Logf("dead: %v", dead["error"])
	if err := replica.Promote(startCtx); err != nil {
		t.Fatal(err)
	}
	recovered := l.nextJSON(ctx)
	if recovered["event"] != "recovered" || recovered["db"] != db {
		t.Fatalf("line %v: want a recovered event from %s", recovered, db)
	}

	newPrimary := testkit.Connect(t, replica.ConnString(), nil)
	notifyFrom(t, ctx, newPrimary, pgnotify.Message{Channel: "failover", Payload: "on the new primary"})
	requireNotification(t, l.nextJSON(ctx), db, "failover", "on the new primary")
}
