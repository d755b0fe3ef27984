package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// The bridge joins the command table here, so that the rest of the tool
// does not know NATS.
func init() {
	commands = append(commands, bridgeCommand)
}

// Bridge timing: how long NATS may take to answer at start, and how often a
// second bridge tries the slot its first holds.
const (
	natsConnectTimeout = 10 * time.Second
	slotRetryEvery     = time.Second
	jetStreamAckWait   = 10 * time.Second
	// duplicateWindow is the window of the JetStream stream the bridge
	// creates: a batch published again after a restart within it is
	// dropped by its Nats-Msg-Id.
	duplicateWindow = 10 * time.Minute
)

var bridgeCommand = &command{
	name:     "bridge",
	synopsis: "[-d URL] -nats URL [-durable -slot NAME [-create-slot]] [-prefix P] CHANNEL...",
	summary:  "carry notifications (or durable messages) onto NATS (or JetStream)",
	usage: `
bridge listens once and publishes on NATS, which fans out to every process
that subscribes: each notification on CHANNEL goes to subject P.CHANNEL
(-prefix, default pgnotify), its payload as the body, with the headers
Pgnotify-Channel, Pgnotify-Pid and Pgnotify-Db (host:port/dbname). This is
NOTIFY: at most once. A lost connection is published as JSON on P._events
({"event":"dead",...}, then {"event":"recovered",...}): the signal for
consumers to resynchronise.

With -durable -slot NAME, bridge reads the messages pgnotify emit writes
(package durable) from the replication slot NAME and publishes them into
JetStream, with Nats-Msg-Id SLOT:LSN:INDEX: a batch is acknowledged on the
slot only once JetStream has stored all of it, and JetStream drops a message
published again, so its stream holds every message once, whatever is killed
or restarted. The stream capturing P.> is used if there is one, else created
(file storage, a duplicate window of 10 minutes). -create-slot creates the
slot if it is missing. A second bridge on the same slot waits, and takes over
when the first one stops: run two for high availability.

Channels must be usable in NATS subjects: no whitespace, '*', '>' or empty
token (a leading, trailing or doubled '.').

At start NATS and PostgreSQL must be reachable, else bridge exits 1 naming
which. Lost connections later are retried, with dead and recovered lines on
standard error. Ctrl-C (SIGINT) or SIGTERM exits 0 with a one-line summary.

Examples:
  pgnotify bridge -nats nats://127.0.0.1:4222 orders jobs
  nats sub 'pgnotify.>'                                   # in another terminal
  pgnotify bridge -nats $NATS_URL -durable -slot bridge -create-slot invoices
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		o := &bridgeOptions{}
		fs.StringVar(&o.url, "d", "", "connection string `URL` (default $DATABASE_URL, else the PG* variables)")
		fs.StringVar(&o.nats, "nats", "", "NATS server `URL`, e.g. nats://127.0.0.1:4222 (default $NATS_URL)")
		fs.BoolVar(&o.durable, "durable", false, "read durable messages from a replication slot and publish them into JetStream")
		fs.StringVar(&o.slot, "slot", "", "with -durable: the replication slot `NAME`")
		fs.BoolVar(&o.createSlot, "create-slot", false, "with -durable: create the slot if it is missing")
		fs.StringVar(&o.prefix, "prefix", natsbridge.DefaultPrefix, "subject prefix `P`: channel C goes to P.C")
		return func(ctx context.Context, e *env, args []string) error {
			o.channels = args
			return bridge(ctx, e, o)
		}
	},
}

// bridgeOptions are bridge's flags and arguments.
type bridgeOptions struct {
	url, nats, slot, prefix string
	durable, createSlot     bool
	channels                []string
}

func (o *bridgeOptions) check(e *env) error {
	if len(o.channels) == 0 {
		return usagef("no CHANNEL: name at least one channel to bridge")
	}
	for _, ch := range o.channels {
		if err := pgnotify.ValidateChannel(ch); err != nil {
			return usagef("%v", err)
		}
	}
	if err := natsbridge.CheckChannels(o.prefix, o.channels...); err != nil {
		return usagef("%v", err)
	}
	if o.nats == "" {
		o.nats = e.getenv("NATS_URL")
	}
	if o.nats == "" {
		return usagef("no -nats URL (and no $NATS_URL): say which NATS server to publish to")
	}
	if o.durable && o.slot == "" {
		return usagef("-durable needs -slot NAME")
	}
	if !o.durable && (o.slot != "" || o.createSlot) {
		return usagef("-slot and -create-slot need -durable")
	}
	return nil
}

func bridge(ctx context.Context, e *env, o *bridgeOptions) error {
	if err := o.check(e); err != nil {
		return err
	}
	db, err := oneDatabase(e, o.url)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	natsLabel := redactNATS(o.nats)
	nc, err := nats.Connect(o.nats, nats.Name("pgnotify bridge"), nats.Timeout(natsConnectTimeout),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("NATS %s: %w", natsLabel, err)
	}
	defer nc.Close()

	b := &bridgeRun{e: e, db: db, nc: nc, start: time.Now(), format: textFormat{durable: o.durable}}
	opts := []natsbridge.Option{natsbridge.WithPrefix(o.prefix), natsbridge.WithDB(db.label), natsbridge.WithEventFunc(b.event)}
	if o.durable {
		err = b.durable(ctx, o, natsLabel, opts)
	} else {
		err = b.notify(ctx, o, natsLabel, opts)
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		fmt.Fprintf(e.stderr, "pgnotify bridge: interrupted after %v: %d message(s) sent to NATS, %d dead, %d recovered\n",
			time.Since(b.start).Round(time.Millisecond), nc.Stats().OutMsgs, b.deaths, b.recoveries)
		return nil
	}
	return err
}

// bridgeRun is one run of the bridge command.
type bridgeRun struct {
	e      *env
	db     *database
	nc     *nats.Conn
	start  time.Time
	format textFormat

	mu                 sync.Mutex // guards the counts: events come from the bridge's goroutine
	deaths, recoveries int
}

// event prints a dead or recovered line on standard error.
func (b *bridgeRun) event(ev pgnotify.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var line []byte
	switch ev.Kind {
	case pgnotify.Dead:
		b.deaths++
		line = b.format.dead(nil, b.db.label, ev.Err, time.Now())
	case pgnotify.Recovered:
		b.recoveries++
		line = b.format.recovered(nil, b.db.label, time.Now())
	}
	_, _ = b.e.stderr.Write(line)
}

// notify bridges NOTIFY to NATS core.
func (b *bridgeRun) notify(ctx context.Context, o *bridgeOptions, natsLabel string, opts []natsbridge.Option) error {
	src, err := openManager(ctx, []*database{b.db}, o.channels)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = src.close(cctx)
	}()
	fmt.Fprintf(b.e.stderr, "pgnotify bridge: %s in %s → NATS %s, subjects %s.CHANNEL\n",
		strings.Join(o.channels, ", "), b.db.label, natsLabel, o.prefix)
	return natsbridge.Notify(ctx, src.m, b.nc, opts...)
}

// durable bridges a durable slot to JetStream.
func (b *bridgeRun) durable(ctx context.Context, o *bridgeOptions, natsLabel string, opts []natsbridge.Option) error {
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncTimeout(jetStreamAckWait))
	if err != nil {
		return fmt.Errorf("NATS %s: %w", natsLabel, err)
	}
	streamName, err := ensureStream(ctx, js, o.prefix)
	if err != nil {
		return fmt.Errorf("NATS %s: JetStream: %w", natsLabel, err)
	}
	if o.createSlot {
		if err := durable.CreateSlot(ctx, b.db.url, o.slot); err != nil {
			return fmt.Errorf("%s: %w", b.db.label, err)
		}
	}
	s, err := b.openSlot(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.e.stderr, "pgnotify bridge: slot %s (%s) in %s → JetStream stream %s on NATS %s\n",
		o.slot, strings.Join(o.channels, ", "), b.db.label, streamName, natsLabel)
	err = natsbridge.Durable(ctx, s, js, opts...)
	if errors.Is(err, natsbridge.ErrUnpublished) {
		// The stream is manual-ack: closing it leaves the batch JetStream
		// does not have unacknowledged, for the next bridge.
		fmt.Fprintf(b.e.stderr, "pgnotify bridge: %s\n", oneLine(err))
		err = nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	if cerr := s.Close(cctx); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// openSlot opens the slot, waiting while another bridge holds it.
func (b *bridgeRun) openSlot(ctx context.Context, o *bridgeOptions) (*durable.Stream, error) {
	said := false
	for {
		s, err := durable.Open(ctx, b.db.url, o.slot, o.channels, durable.WithManualAck())
		switch {
		case err == nil:
			return s, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, durable.ErrSlotMissing):
			return nil, fmt.Errorf("%s: %w (add -create-slot to create it)", b.db.label, err)
		case !errors.Is(err, durable.ErrSlotInUse):
			return nil, fmt.Errorf("%s: %w", b.db.label, err)
		}
		if !said {
			fmt.Fprintf(b.e.stderr, "pgnotify bridge: slot %s is in use (another bridge?): waiting to take over\n", o.slot)
			said = true
		}
		t := time.NewTimer(slotRetryEvery)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// ensureStream returns the JetStream stream capturing prefix.>, creating one
// if there is none.
func ensureStream(ctx context.Context, js jetstream.JetStream, prefix string) (string, error) {
	subject := prefix + ".>"
	name, err := js.StreamNameBySubject(ctx, subject)
	if err == nil {
		return name, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", err
	}
	name = strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(prefix))
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{subject},
		Storage:    jetstream.FileStorage,
		Duplicates: duplicateWindow,
	})
	return name, err
}

// redactNATS returns the NATS URL(s) without credentials.
func redactNATS(s string) string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if p, err := url.Parse(strings.TrimSpace(u)); err == nil && p.Host != "" {
			out = append(out, p.Scheme+"://"+p.Host)
		} else {
			out = append(out, "(unparsable URL)")
		}
	}
	return strings.Join(out, ",")
}
