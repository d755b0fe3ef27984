package natsbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// Header names set on every message.
const (
	HeaderChannel = "Pgnotify-Channel" // the PostgreSQL channel
	HeaderPID     = "Pgnotify-Pid"     // the notifying backend's PID (Notify only)
	HeaderDB      = "Pgnotify-Db"      // the database's label (see WithDB)
	HeaderLSN     = "Pgnotify-Lsn"     // the batch's commit LSN, as PostgreSQL writes it (Durable only)
)

// Notify publishes every notification m yields on NATS core, until ctx ends
// (it then returns ctx's error), m is closed ([pgnotify.ErrClosed]) or left
// with no connection (nil), or nc is closed. It must be the only caller of
// m's Next while it runs; give m a [pgnotify.WithReconnect] so that a lost
// connection comes back.
//
// Each notification goes to subject prefix + "." + channel (see
// [WithPrefix]), its payload as the body, with the headers Pgnotify-Channel,
// Pgnotify-Pid and Pgnotify-Db. Notifications of one channel are published
// in the order the server sent them. Dead and Recovered events are published
// as JSON on prefix + "._events" ({"event":"dead","db":..,"time":..,"error":..}
// and {"event":"recovered",...}), so that consumers know they may have missed
// notifications and should resynchronise. Delivery is at most once, like
// NOTIFY's: what is sent while no connection listens, or while NATS is away
// for longer than nc's reconnect buffer holds, is not heard; a full reconnect
// buffer holds the bridge back (and so the server's queue) rather than drop
// what it read.
//
// Before it publishes anything, Notify reads the channels m's connections
// listen on and returns an error matching [ErrSubject] naming the first that
// no NATS subject can carry. A channel listened on later is checked when its
// first notification comes, with the same error.
func Notify(ctx context.Context, m *pgnotify.Manager, nc *nats.Conn, opts ...Option) error {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	p := &notifyPublisher{
		cfg:      cfg,
		nc:       nc,
		subjects: make(map[string]string),
		labels:   make(map[*pgx.Conn]string),
		pids:     make(map[uint32]string),
		chanVal:  make([]string, 1),
		pidVal:   make([]string, 1),
		dbVal:    make([]string, 1),
	}
	p.msg.Header = nats.Header{HeaderChannel: p.chanVal, HeaderPID: p.pidVal, HeaderDB: p.dbVal}
	for _, conn := range m.Conns() {
		var channels []string
		err := m.Do(ctx, conn, func(c *pgx.Conn) error {
			var err error
			channels, err = pgnotify.ListeningChannels(ctx, c)
			return err
		})
		if err != nil {
			return fmt.Errorf("natsbridge: reading the channels listened on: %w", err)
		}
		for _, ch := range channels {
			if _, err := p.subject(ch); err != nil {
				return err
			}
		}
	}
	for {
		ev, err := m.Next(ctx)
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("natsbridge: %w", err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			err = p.batch(ctx, ev)
		case pgnotify.Dead, pgnotify.Recovered:
			err = p.event(ctx, ev)
		}
		if err != nil {
			return err
		}
	}
}

// notifyPublisher publishes one Manager's events. It is owned by the
// goroutine running Notify.
type notifyPublisher struct {
	cfg      config
	nc       *nats.Conn
	subjects map[string]string    // channel → subject, checked
	labels   map[*pgx.Conn]string // connection → its database's label
	pids     map[uint32]string    // backend PID → its decimal form

	// msg is reused for every notification: PublishMsg copies it into nc's
	// buffer before it returns. Its header values are the slices below.
	msg                    nats.Msg
	chanVal, pidVal, dbVal []string
}

// subject returns channel's subject, or an error if it has none.
func (p *notifyPublisher) subject(channel string) (string, error) {
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

// label returns the Pgnotify-Db value for conn.
func (p *notifyPublisher) label(conn *pgx.Conn) string {
	if p.cfg.db != "" {
		return p.cfg.db
	}
	if l, ok := p.labels[conn]; ok {
		return l
	}
	l := "?"
	if conn != nil {
		cfg := conn.Config()
		l = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	p.labels[conn] = l
	return l
}

func (p *notifyPublisher) pid(pid uint32) string {
	s, ok := p.pids[pid]
	if !ok {
		if len(p.pids) > 1024 { // backends come and go; keep only recent ones
			clear(p.pids)
		}
		s = strconv.FormatUint(uint64(pid), 10)
		p.pids[pid] = s
	}
	return s
}

func (p *notifyPublisher) batch(ctx context.Context, ev pgnotify.Event) error {
	p.dbVal[0] = p.label(ev.Conn)
	for _, n := range ev.Notifications {
		subj, err := p.subject(n.Channel)
		if err != nil {
			return err
		}
		p.msg.Subject = subj
		// nats.go only reads Data, and copies it before PublishMsg returns:
		// no copy of the payload is needed.
		p.msg.Data = unsafe.Slice(unsafe.StringData(n.Payload), len(n.Payload))
		p.chanVal[0] = n.Channel
		p.pidVal[0] = p.pid(n.PID)
		if err := p.publish(ctx, &p.msg); err != nil {
			return err
		}
	}
	p.msg.Data = nil
	return nil
}

// event publishes a Dead or Recovered event as JSON.
func (p *notifyPublisher) event(ctx context.Context, ev pgnotify.Event) error {
	if ev.Kind == pgnotify.Recovered {
		// The replacement inherits the label of the connection it replaces.
		if l, ok := p.labels[ev.Replaced]; ok && p.cfg.db == "" {
			p.labels[ev.Conn] = l
			delete(p.labels, ev.Replaced)
		}
	}
	db := p.label(ev.Conn)
	msg := &nats.Msg{
		Subject: p.cfg.prefix + "." + eventsToken,
		Header:  nats.Header{HeaderDB: []string{db}},
		Data:    eventJSON(ev, db, time.Now()),
	}
	if err := p.publish(ctx, msg); err != nil {
		return err
	}
	if p.cfg.onEvent != nil {
		p.cfg.onEvent(ev)
	}
	return nil
}

// publish publishes msg on NATS core. While nc's reconnect buffer is full it
// waits and tries again: holding the Manager back keeps the notifications in
// the server's queue rather than dropping them here.
func (p *notifyPublisher) publish(ctx context.Context, msg *nats.Msg) error {
	for attempt := 0; ; attempt++ {
		err := p.nc.PublishMsg(msg)
		if err == nil {
			return nil
		}
		if !errors.Is(err, nats.ErrReconnectBufExceeded) {
			return fmt.Errorf("natsbridge: publish on %s: %w", msg.Subject, err)
		}
		if err := sleep(ctx, backoff.Delay(p.cfg.retryMin, p.cfg.retryMax, attempt)); err != nil {
			return err
		}
	}
}
