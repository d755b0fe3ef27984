package main

// The busstorm scenario: the Bus's reconnect backoff on a real server
// (issue 17 item 2). A storm: the Bus's backend is killed every 0.3–0.7 s
// for 20 s while a producer sends about 700 notifications a second; how
// many arrive, and how long each outage lasts. A server that refuses
// connections for 30 s: how many attempts the Bus makes, and how soon it
// is back once the server is.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

func runBusStorm(ctx context.Context, cfg config, res *result) error {
	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()
	url := cl.ConnString()
	stormFor, downFor := 20*time.Second, 30*time.Second
	if cfg.quick {
		stormFor, downFor = 5*time.Second, 5*time.Second
	}
	res.Params["storm"] = stormFor.String()
	res.Params["down"] = downFor.String()

	st, err := busStorm(ctx, url, notifier, stormFor)
	if err != nil {
		return fmt.Errorf("storm: %w", err)
	}
	logf("busstorm: storm done")
	dn, err := busDown(ctx, url, notifier, downFor)
	if err != nil {
		return fmt.Errorf("down: %w", err)
	}
	logf("busstorm: down server done")
	res.Params["storm_result"] = st
	res.Params["down_result"] = dn
	res.Markdown = fmt.Sprintf("Bus reconnect, default backoff (%v to %v, reset once a connection outlived the wait before it), real server.\n\n"+
		"Storm: the Bus's backend killed every 0.3–0.7 s for %v, ~700 NOTIFYs/s: %d of %d notifications received (%.1f%%), "+
		"%d lost to the subscription's buffer (Lagged), %d deaths, %d recoveries; outage (Dead to Recovered, as a subscriber sees it) median %v, max %v.\n\n"+
		"Server refusing connections for %v: %d connection attempts; back %v after the server was (Recovered seen by the subscriber).\n",
		backoff.DefaultMin, backoff.DefaultMax, stormFor, st.Received, st.Sent, 100*float64(st.Received)/float64(st.Sent),
		st.Lagged, st.Deaths, st.Recoveries, st.OutageMedian, st.OutageMax, downFor, dn.Attempts, dn.BackAfter)
	return nil
}

type stormResult struct {
	Sent, Received, Lagged  int
	Deaths, Recoveries      uint64
	OutageMedian, OutageMax time.Duration
}

func busStorm(ctx context.Context, url string, notifier *pgx.Conn, d time.Duration) (stormResult, error) {
	var r stormResult
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, url) })
	defer b.Close(context.Background())
	s, err := b.Subscribe(ctx, []string{"storm"})
	if err != nil {
		return r, err
	}
	defer s.Close()

	var outages []time.Duration
	var received, lagged atomic.Int64
	readDone := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var deadAt time.Time
		for ev, err := range s.Events(rctx) {
			if err != nil {
				if errors.Is(err, context.Canceled) {
					err = nil
				}
				readDone <- err
				return
			}
			switch ev.Kind {
			case pgnotify.Batch:
				for _, n := range ev.Notifications {
					if n.Payload == "end" {
						readDone <- nil
						return
					}
					received.Add(1)
				}
			case pgnotify.Lagged:
				lagged.Add(int64(ev.Dropped))
			case pgnotify.Dead:
				deadAt = time.Now()
			case pgnotify.Recovered:
				if !deadAt.IsZero() {
					outages = append(outages, time.Since(deadAt))
					deadAt = time.Time{}
				}
			}
		}
	}()

	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, err
	}
	defer admin.Close(context.Background())
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	wg.Add(1)
	var killErr error
	go func() {
		defer wg.Done()
		for {
			t := time.Duration(300+rand.IntN(400)) * time.Millisecond
			if time.Now().Add(t).After(end) {
				return
			}
			time.Sleep(t)
			if pid := b.Stats().PID; pid != 0 {
				if _, err := admin.Exec(ctx, "select pg_terminate_backend($1)", pid); err != nil {
					killErr = err
					return
				}
			}
		}
	}()
	// Distinct payloads: the server folds identical notifications of one
	// transaction into one.
	msgs := make([]pgnotify.Message, 7)
	tick := time.NewTicker(10 * time.Millisecond)
	for time.Now().Before(end) {
		<-tick.C
		for i := range msgs {
			msgs[i] = pgnotify.Message{Channel: "storm", Payload: strconv.Itoa(r.Sent + i)}
		}
		if err := pgnotify.Notify(ctx, notifier, msgs...); err != nil {
			tick.Stop()
			return r, err
		}
		r.Sent += len(msgs)
	}
	tick.Stop()
	wg.Wait()
	if killErr != nil {
		return r, killErr
	}
	// The end marker, once the Bus is back.
	for back := time.Now().Add(time.Minute); !b.Stats().Connected; {
		if time.Now().After(back) {
			return r, errors.New("busstorm: the Bus did not reconnect within a minute of the storm")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "storm", Payload: "end"}); err != nil {
		return r, err
	}
	select {
	case err := <-readDone:
		if err != nil {
			return r, err
		}
	case <-time.After(time.Minute):
		return r, errors.New("the end marker did not arrive")
	}
	st := b.Stats()
	r.Received, r.Deaths, r.Recoveries = int(received.Load()), st.Deaths, st.Reconnects
	r.Lagged = int(lagged.Load())
	if len(outages) > 0 {
		slices.Sort(outages)
		r.OutageMedian = outages[len(outages)/2].Round(time.Millisecond)
		r.OutageMax = outages[len(outages)-1].Round(time.Millisecond)
	}
	return r, nil
}

type downResult struct {
	Attempts  int64
	BackAfter time.Duration
}

func busDown(ctx context.Context, url string, notifier *pgx.Conn, d time.Duration) (downResult, error) {
	var r downResult
	var down atomic.Bool
	var calls atomic.Int64
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) {
		if down.Load() {
			calls.Add(1)
			// A port nobody listens on: a real connection refused.
			return pgx.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
		}
		return pgx.Connect(ctx, url)
	})
	defer b.Close(context.Background())
	s, err := b.Subscribe(ctx, []string{"down"})
	if err != nil {
		return r, err
	}
	defer s.Close()
	down.Store(true)
	if _, err := notifier.Exec(ctx, "select pg_terminate_backend($1)", b.Stats().PID); err != nil {
		return r, err
	}
	if ev, err := s.Next(ctx); err != nil || ev.Kind != pgnotify.Dead {
		return r, fmt.Errorf("want Dead, got %v, %v", ev.Kind, err)
	}
	time.Sleep(d)
	down.Store(false)
	r.Attempts = calls.Load()
	up := time.Now()
	if ev, err := s.Next(ctx); err != nil || ev.Kind != pgnotify.Recovered {
		return r, fmt.Errorf("want Recovered, got %v, %v", ev.Kind, err)
	}
	r.BackAfter = time.Since(up).Round(time.Millisecond)
	return r, nil
}
