package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultConnectTimeout bounds connecting when the connection string sets
// no connect_timeout: an unreachable server is an error, not a hang.
const defaultConnectTimeout = 10 * time.Second

// applicationName is the application_name the tool's sessions carry unless
// the connection string sets one: it finds them in pg_stat_activity.
const applicationName = "pgnotify"

// urlList is a -d flag that may be given several times.
type urlList []string

func (l *urlList) String() string { return fmt.Sprint([]string(*l)) }

func (l *urlList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// database is one -d: its connection config and its label.
type database struct {
	// label names the database in output and errors: host:port/dbname,
	// never a password, with #2, #3... for a repeated one. It never
	// changes, so it survives reconnects.
	label  string
	config *pgx.ConnConfig
	url    string // as given ("" for the PG* variables), for package durable
}

// databases resolves the -d flags (urls), or else $DATABASE_URL, or else
// the libpq variables, into configs with labels. A string pgx cannot parse
// is a usage error.
func databases(e *env, urls []string) ([]*database, error) {
	if len(urls) == 0 {
		// An empty string makes pgx read the PG* variables.
		urls = []string{e.getenv("DATABASE_URL")}
	}
	dbs := make([]*database, 0, len(urls))
	seen := make(map[string]int)
	for _, u := range urls {
		cfg, err := pgx.ParseConfig(u)
		if err != nil {
			// pgx's ParseConfigError hides the password.
			return nil, usagef("%v", err)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = defaultConnectTimeout
		}
		if _, ok := cfg.RuntimeParams["application_name"]; !ok {
			cfg.RuntimeParams["application_name"] = applicationName
		}
		label := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
		seen[label]++
		if n := seen[label]; n > 1 {
			label += "#" + strconv.Itoa(n)
		}
		dbs = append(dbs, &database{label: label, config: cfg, url: u})
	}
	return dbs, nil
}

// connect opens a connection to db; the error names db's label.
func (db *database) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, db.config)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w", db.label, err)
	}
	return conn, nil
}

// singleDatabase defines the -d flag of a command that uses one database.
func singleDatabase(fs *flag.FlagSet) *string {
	return fs.String("d", "", "connection string `URL` (default $DATABASE_URL, else the PG* variables)")
}

// oneDatabase resolves a single -d (empty: the default).
func oneDatabase(e *env, url string) (*database, error) {
	var urls []string
	if url != "" {
		urls = []string{url}
	}
	dbs, err := databases(e, urls)
	if err != nil {
		return nil, err
	}
	return dbs[0], nil
}
