package natsbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// startNotify runs natsbridge.Notify over a Manager holding conn, until
// the returned stop is called (which also closes the Manager) or t ends.
func startNotify(t *testing.T, conn *pgx.Conn, nc *nats.Conn, opts ...natsbridge.Option) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := pgnotify.NewManager(pgnotify.WithReconnect(pgnotify.Redial, 10*time.Millisecond, 100*time.Millisecond))
	if err := m.Add(ctx, conn); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- natsbridge.Notify(ctx, m, nc, opts...) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
			_ = m.Close(context.Background())
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// next returns sub's next message, failing t after the test's deadline.
func next(t *testing.T, ctx context.Context, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatalf("no message on %s: %v", sub.Subject, err)
	}
	return m
}

func TestNotifySubjectsHeadersPayloadOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := startNATS(t)
	watch := connectNATS(t, ns)
	sub, err := watch.SubscribeSync("app.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	listener := connect(t, ctx)
	if err := pgnotify.Listen(ctx, listener, "orders", "users.signup"); err != nil {
		t.Fatal(err)
	}
	cfg := listener.Config()
	db := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	stop := startNotify(t, listener, connectNATS(t, ns), natsbridge.WithPrefix("app"))

	sender := connect(t, ctx)
	payloads := []string{"", "plain", `{"id": 42}`, "ünïcödé ✓", "line\nbreak and\ttab", "  spaces  "}
	var want []pgnotify.Message
	for i, p := range payloads {
		want = append(want, pgnotify.Message{Channel: "orders", Payload: p},
			pgnotify.Message{Channel: "users.signup", Payload: strconv.Itoa(i)})
	}
	// Half in one transaction, half one by one.
	if err := pgnotify.Notify(ctx, sender, want[:6]...); err != nil {
		t.Fatal(err)
	}
	for _, msg := range want[6:] {
		if err := pgnotify.Notify(ctx, sender, msg); err != nil {
			t.Fatal(err)
		}
	}
	pid := strconv.FormatUint(uint64(sender.PgConn().PID()), 10)

	got := map[string][]string{}
	for range want {
		m := next(t, ctx, sub)
		ch := m.Header.Get(natsbridge.HeaderChannel)
		if m.Subject != "app."+ch {
			t.Errorf("subject %q for channel %q", m.Subject, ch)
		}
		if p := m.Header.Get(natsbridge.HeaderPID); p != pid {
			t.Errorf("Pgnotify-Pid %q, want %q", p, pid)
		}
		if d := m.Header.Get(natsbridge.HeaderDB); d != db {
			t.Errorf("Pgnotify-Db %q, want %q", d, db)
		}
		got[ch] = append(got[ch], string(m.Data))
	}
	for _, ch := range []string{"orders", "users.signup"} {
		var w []string
		for _, msg := range want {
			if msg.Channel == ch {
				w = append(w, msg.Payload)
			}
		}
		if fmt.Sprintf("%q", got[ch]) != fmt.Sprintf("%q", w) {
			t.Errorf("channel %s: got %q, want %q (verbatim, in order)", ch, got[ch], w)
		}
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Notify after cancel returned %v, want context.Canceled", err)
	}
}

func TestNotifyRejectsChannelsNATSCannotCarry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := startNATS(t)
	watch := connectNATS(t, ns)
	sub, err := watch.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"has space", "star*", "gt>", "a..b", ".lead", "trail.", "_events", "tab\there"} {
		t.Run(bad, func(t *testing.T) {
			conn := connect(t, ctx)
			// A valid channel's notification is already waiting: nothing
			// of it may be published either.
			if err := pgnotify.Listen(ctx, conn, "fine", bad); err != nil {
				t.Fatal(err)
			}
			if err := pgnotify.Notify(ctx, conn, pgnotify.Message{Channel: "fine", Payload: "x"}); err != nil {
				t.Fatal(err)
			}
			m := pgnotify.NewManager()
			defer m.Close(context.Background())
			if err := m.Add(ctx, conn); err != nil {
				t.Fatal(err)
			}
			nc := connectNATS(t, ns)
			err := natsbridge.Notify(ctx, m, nc)
			if !errors.Is(err, natsbridge.ErrSubject) {
				t.Fatalf("Notify = %v, want ErrSubject", err)
			}
			if want := strconv.Quote(bad); !contains(err.Error(), want) {
				t.Errorf("error %q does not name the channel %s", err, want)
			}
			// Whatever nc sent reaches the server before its PONG, and the
			// server forwards it to watch before watch's own PONG.
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := watch.Flush(); err != nil {
				t.Fatal(err)
			}
			if n, _, _ := sub.Pending(); n != 0 {
				t.Errorf("%d messages published before the error", n)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestNotifyDeadAndRecoveredOnEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	watch := connectNATS(t, ns)
	sub, err := watch.SubscribeSync("pgnotify.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	listener := connect(t, ctx)
	if err := pgnotify.Listen(ctx, listener, "jobs"); err != nil {
		t.Fatal(err)
	}
	victim := listener.PgConn().PID()
	var seen []pgnotify.Kind
	events := make(chan pgnotify.Kind, 4)
	startNotify(t, listener, connectNATS(t, ns), natsbridge.WithEventFunc(func(ev pgnotify.Event) { events <- ev.Kind }))

	admin := connect(t, ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", victim); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dead", "recovered"} {
		m := next(t, ctx, sub)
		if m.Subject != "pgnotify._events" {
			t.Fatalf("got %s %q before the %s event", m.Subject, m.Data, want)
		}
		var ev struct{ Event, DB, Time, Error string }
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("%q: %v", m.Data, err)
		}
		if ev.Event != want || ev.DB == "" || ev.Time == "" || (want == "dead") != (ev.Error != "") {
			t.Errorf("event %s, want %s with db, time and (dead only) error", m.Data, want)
		}
		seen = append(seen, <-events)
	}
	if seen[0] != pgnotify.Dead || seen[1] != pgnotify.Recovered {
		t.Errorf("WithEventFunc saw %v, want Dead, Recovered", seen)
	}
	// The recovered connection listens again: the bridge goes on.
	if err := pgnotify.Notify(ctx, admin, pgnotify.Message{Channel: "jobs", Payload: "after"}); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, sub); m.Subject != "pgnotify.jobs" || string(m.Data) != "after" {
		t.Errorf("after recovery got %s %q", m.Subject, m.Data)
	}
}

func TestNotifyStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := startNATS(t)
	listener := connect(t, ctx)
	if err := pgnotify.Listen(ctx, listener, "idle"); err != nil {
		t.Fatal(err)
	}
	stop := startNotify(t, listener, connectNATS(t, ns))
	start := time.Now()
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Notify = %v, want context.Canceled", err)
	}
	// Not a speed assertion: a hang would end the test by its deadline;
	// this reports the time for the reader.
	t.Logf("Notify returned %v after cancel", time.Since(start))
}
