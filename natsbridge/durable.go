package natsbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// ackGrace is how long a batch already sent may take to be acknowledged
// once ctx has ended: long enough for a JetStream that answers, short
// enough that cancelling stays prompt when it does not.
const ackGrace = time.Second

// window is how many messages of one batch are awaiting JetStream's
// acknowledgement at most: below nats.go's default of 4000 pending
// asynchronous publishes, past which PublishMsgAsync fails.
const window = 1024

// Durable publishes every batch s yields into JetStream, until ctx ends (it
// then returns ctx's error) or s ends (its error, wrapped). It must be the
// only caller of s's Next while it runs. It does not close s: its caller
// does, after Durable has returned.
//
// Each message goes to subject prefix + "." + channel (see [WithPrefix]),
// which a JetStream stream must capture, with header Nats-Msg-Id =
// slot:commitLSN:index (the LSN as PostgreSQL writes it, the index of the
// message in its transaction from 0) and the headers Pgnotify-Channel,
// Pgnotify-Lsn and, with [WithDB], Pgnotify-Db. s must be opened
// [durable.WithManualAck] (otherwise Durable returns [ErrNeedsManualAck]).
// The messages of a batch are published asynchronously and the batch is
// acknowledged on the slot ([durable.Stream.Ack]) only once JetStream has
// acknowledged every one of them;
// until then the batch is published again, with backoff, whenever an
// acknowledgement fails or does not come within [WithAckTimeout]. So a
// bridge killed at any moment and restarted loses nothing, and JetStream's
// duplicate window (the stream's Duplicates setting, 2 minutes by default:
// make it longer than a bridge may stay down) drops what comes again: the
// stream holds each message once, in commit order.
//
// Dead and Recovered events of s are passed to [WithEventFunc] and not
// published: nothing is lost when a durable stream reconnects.
//
// When ctx ends while a batch awaits JetStream's acknowledgements, Durable
// waits for them a little longer (about a second). If they do not come, it
// returns an error matching both [ErrUnpublished] and ctx's error: that
// batch stays unacknowledged, so closing the stream and opening the slot
// again yields it again. An error JetStream will not get
// over (a message larger than its max_payload, nc closed) ends Durable the
// same way.
func Durable(ctx context.Context, s *durable.Stream, js jetstream.JetStream, opts ...Option) error {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	slot, err := slotOf(s)
	if err != nil {
		return err
	}
	p := &durablePublisher{cfg: cfg, js: js, slot: slot, subjects: make(map[string]string)}
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("natsbridge: %w", err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			if err := p.batch(ctx, ev); err != nil {
				return err
			}
			if err := s.Ack(ev.LSN); err != nil {
				return fmt.Errorf("natsbridge: %w", err)
			}
		case pgnotify.Dead, pgnotify.Recovered:
			if cfg.onEvent != nil {
				cfg.onEvent(ev)
			}
		}
	}
}

// slotOf returns the name of the slot s reads, and refuses a stream whose
// batches Next would acknowledge before JetStream has.
func slotOf(s *durable.Stream) (string, error) {
	if s == nil {
		return "", errors.New("natsbridge: Durable needs a stream")
	}
	if !s.ManualAck() {
		return "", ErrNeedsManualAck
	}
	return s.Slot(), nil
}

// durablePublisher publishes one stream's batches. It is owned by the
// goroutine running Durable.
type durablePublisher struct {
	cfg      config
	js       jetstream.JetStream
	slot     string
	subjects map[string]string // channel → subject, checked
	futures  []jetstream.PubAckFuture
}

// batch publishes ev until JetStream has acknowledged every message of it.
func (p *durablePublisher) batch(ctx context.Context, ev pgnotify.Event) error {
	lsn := fmt.Sprintf("%X/%X", ev.LSN>>32, uint32(ev.LSN))
	attempt := 0
	for {
		err := p.try(ctx, ev, lsn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || permanent(err) {
			return &unpublishedError{lsn: lsn, err: err}
		}
		if p.cfg.logger != nil {
			p.cfg.logger.Warn("natsbridge: JetStream did not acknowledge a batch; publishing it again",
				slog.String("lsn", lsn), slog.Int("attempt", attempt+1), slog.Any("err", err))
		}
		if err := sleep(ctx, backoff.Delay(p.cfg.retryMin, p.cfg.retryMax, attempt)); err != nil {
			return &unpublishedError{lsn: lsn, err: err}
		}
		attempt++
	}
}

// try publishes every message of ev once and awaits JetStream's
// acknowledgements, at most window at a time.
func (p *durablePublisher) try(ctx context.Context, ev pgnotify.Event, lsn string) error {
	p.futures = p.futures[:0]
	defer clear(p.futures)
	aw := awaiter{ctx: ctx, timeout: p.cfg.ackTimeout}
	defer aw.stop()
	idPrefix := p.slot + ":" + lsn + ":"
	done := 0
	for i, n := range ev.Notifications {
		subj, err := p.subject(n.Channel)
		if err != nil {
			return err
		}
		h := nats.Header{
			jetstream.MsgIDHeader: {idPrefix + strconv.Itoa(i)},
			HeaderChannel:         {n.Channel},
			HeaderLSN:             {lsn},
		}
		if p.cfg.db != "" {
			h[HeaderDB] = []string{p.cfg.db}
		}
		// No retries inside nats.go: a message it published again on its
		// own could land after the next one, out of order. The whole batch
		// is published again instead, in order.
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: subj, Header: h, Data: []byte(n.Payload)}, noRetry)
		if err != nil {
			return err
		}
		p.futures = append(p.futures, f)
		for len(p.futures)-done >= window {
			if err := aw.await(p.futures[done]); err != nil {
				return err
			}
			done++
		}
	}
	for ; done < len(p.futures); done++ {
		if err := aw.await(p.futures[done]); err != nil {
			return err
		}
	}
	return nil
}

func (p *durablePublisher) subject(channel string) (string, error) {
	if s, ok := p.subjects[channel]; ok {
		return s, nil
	}
	if err := checkChannel(channel); err != nil {
		return "", err
	}
	s := p.cfg.prefix + "." + channel
	p.subjects[channel] = s
	return s, nil
}

var noRetry = jetstream.WithRetryAttempts(0)

// awaiter waits for the acknowledgements of one attempt: all within
// timeout, and within ackGrace more once ctx has ended.
type awaiter struct {
	ctx     context.Context
	timeout time.Duration
	timer   *time.Timer
	grace   bool // ctx has ended; timer now runs the grace
}

func (a *awaiter) await(f jetstream.PubAckFuture) error {
	if a.timer == nil {
		a.timer = time.NewTimer(a.timeout)
	}
	done := a.ctx.Done()
	if a.grace {
		done = nil
	}
	for {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-a.timer.C:
			if a.grace {
				return a.ctx.Err()
			}
			return fmt.Errorf("no acknowledgement within %v", a.timeout)
		case <-done:
			a.grace, done = true, nil
			a.timer.Reset(ackGrace)
		}
	}
}

func (a *awaiter) stop() {
	if a.timer != nil {
		a.timer.Stop()
	}
}

// permanent reports whether publishing again cannot help.
func permanent(err error) bool {
	if errors.Is(err, ErrSubject) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var api *jetstream.APIError
	// 503 is "no suitable peers" or a stream still electing a leader: it
	// passes. 4xx are requests JetStream refuses (a message too large for
	// the stream, a sealed stream): they stay refused.
	return errors.As(err, &api) && api.Code >= 400 && api.Code < 500
}
