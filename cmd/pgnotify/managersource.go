package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
)

// Reconnect backoff: the first retry comes quickly, later ones no more
// often than every 15s while the server stays away.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 15 * time.Second
)

// managerSource is listen's NOTIFY source: one Manager over a connection to
// each database, which recovers lost ones by itself.
type managerSource struct {
	m *pgnotify.Manager

	mu   sync.Mutex              // guards dbOf: the Manager dials from its own goroutines
	dbOf map[*pgx.Conn]*database // every connection made, live or dead, to its database
}

// openManager connects to every database at once and LISTENs there, then
// hands the connections to a Manager. Any failure closes them all and
// returns an error naming the database.
func openManager(ctx context.Context, dbs []*database, channels []string) (*managerSource, error) {
	conns := make([]*pgx.Conn, len(dbs))
	// The first failure cancels the others: they are closed anyway, and
	// the error names the database that failed first.
	g, gctx := errgroup.WithContext(ctx)
	for i, db := range dbs {
		g.Go(func() error {
			conn, err := db.connect(gctx)
			if err != nil {
				return err
			}
			conns[i] = conn
			if err := pgnotify.Listen(gctx, conn, channels...); err != nil {
				return fmt.Errorf("%s: %w", db.label, err)
			}
			return nil
		})
	}
	err := g.Wait()
	s := &managerSource{dbOf: make(map[*pgx.Conn]*database, len(dbs))}
	if err == nil {
		s.m = pgnotify.NewManager(pgnotify.WithReconnect(s.dial, reconnectMin, reconnectMax))
		for i, conn := range conns {
			s.dbOf[conn] = dbs[i]
		}
		if err = s.m.Add(ctx, conns...); err != nil {
			_ = s.m.Close(context.WithoutCancel(ctx))
		}
	}
	if err != nil {
		for _, conn := range conns {
			if conn != nil {
				_ = conn.Close(context.WithoutCancel(ctx))
			}
		}
		return nil, err
	}
	return s, nil
}

// dial replaces a dead connection with a new one to the same database. The
// Manager LISTENs on the dead one's channels itself.
func (s *managerSource) dial(ctx context.Context, dead pgnotify.Garbage) (*pgx.Conn, error) {
	s.mu.Lock()
	db := s.dbOf[dead.Conn]
	s.mu.Unlock()
	if db == nil {
		return nil, errors.New("pgnotify listen: internal error: a connection of unknown origin died")
	}
	conn, err := db.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.dbOf[conn] = db
	s.mu.Unlock()
	return conn, nil
}

// label returns the label of conn's database.
func (s *managerSource) label(conn *pgx.Conn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if db := s.dbOf[conn]; db != nil {
		return db.label
	}
	return "?"
}

// next returns the Manager's next event with its database's label. A
// recovered connection inherits the label of the one it replaces.
func (s *managerSource) next(ctx context.Context) (string, pgnotify.Event, error) {
	for {
		ev, err := s.m.Next(ctx)
		if err == io.EOF {
			// WithReconnect keeps dead connections as members until they
			// are replaced, so an empty set should not happen; say so
			// rather than exit quietly.
			return "", ev, errors.New("no connection left to listen on")
		}
		if err != nil {
			return "", ev, err
		}
		switch ev.Kind {
		case pgnotify.Batch, pgnotify.Dead:
			return s.label(ev.Conn), ev, nil
		case pgnotify.Recovered:
			db := s.label(ev.Conn)
			s.mu.Lock()
			delete(s.dbOf, ev.Replaced)
			s.mu.Unlock()
			return db, ev, nil
		}
	}
}

func (s *managerSource) wholeBatches() bool { return false }

// close closes the Manager and every connection it holds.
func (s *managerSource) close(ctx context.Context) error {
	return s.m.Close(ctx)
}
