package pgtmp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	bouncerPrefix  = "pgnotify-pgbouncer-"
	bouncerConf    = "pgbouncer.ini"
	bouncerPIDFile = "pgbouncer.pid"
	bouncerLog     = "pgbouncer.log"
	bouncerUsers   = "userlist.txt"
	// bouncerServers is how many server connections a transaction- or
	// statement-mode pool opens before StartPgBouncer returns.
	bouncerServers = 2
)

// missingPgBouncer is the error text when no pgbouncer binary is found.
const missingPgBouncer = "pgbouncer not found (on PATH or in /usr/sbin): " +
	"install it, e.g. `apt-get update && apt-get install -y pgbouncer`"

// PgBouncer is a running throwaway PgBouncer in front of a server. Its
// methods may be called from any goroutine.
type PgBouncer struct {
	dir  string
	port int
	user string
	db   string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	mu      sync.Mutex
	stopped bool
	stopErr error
}

// StartPgBouncer starts PgBouncer (Debian's pgbouncer package) on a free
// loopback port in front of the server upstream names (a connection string,
// such as [Cluster.ConnString]), with pool mode mode: "session",
// "transaction" or "statement". It runs as the postgres user when this
// process is root (PgBouncer refuses to run as root) and trusts every client
// listed as upstream's user. In transaction and statement mode it opens two
// server connections before it returns and hands them out in turn
// (server_round_robin), so that two transactions in a row of one client run
// in different server processes, as they do in a busy pool. ctx bounds the
// start; Stop ends the process. The error says what to install when
// pgbouncer is missing. On error nothing is left behind.
func StartPgBouncer(ctx context.Context, upstream, mode string) (*PgBouncer, error) {
	switch mode {
	case "session", "transaction", "statement":
	default:
		return nil, fmt.Errorf("pgtmp: pgbouncer pool mode %q: want session, transaction or statement", mode)
	}
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	up, err := pgconn.ParseConfig(upstream)
	if err != nil {
		return nil, fmt.Errorf("pgtmp: pgbouncer upstream: %w", err)
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	removeStaleBouncers()
	dir, err := os.MkdirTemp("", bouncerPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	b := &PgBouncer{dir: dir, user: up.User, db: up.Database}
	ok := false
	defer func() {
		if !ok {
			b.Stop()
		}
	}()
	c := &Cluster{cred: cred, dir: dir} // for chown and command
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	users := fmt.Sprintf("%s %s\n", bouncerQuote(up.User), bouncerQuote(""))
	if err := os.WriteFile(filepath.Join(dir, bouncerUsers), []byte(users), 0o644); err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := b.writeConfig(port, mode, up); err != nil {
			return nil, err
		}
		b.port = port
		err = b.start(ctx, c, bin)
		if err == nil {
			break
		}
		if attempt == startAttempts || ctx.Err() != nil || !strings.Contains(err.Error(), "in use") {
			return nil, err
		}
	}
	if mode != "session" {
		if err := b.openServers(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return b, nil
}

// ConnString returns a URL that connects through PgBouncer to upstream's
// database as upstream's user, without TLS.
func (b *PgBouncer) ConnString() string {
	u := url.URL{Scheme: "postgres", User: url.User(b.user), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)),
		Path: "/" + b.db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Port returns the loopback TCP port PgBouncer listens on.
func (b *PgBouncer) Port() int { return b.port }

// Stop ends PgBouncer (immediate shutdown: its clients' connections are
// closed) and removes its dir. It is idempotent: later calls return the
// first call's result.
func (b *PgBouncer) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return b.stopErr
	}
	b.stopped = true
	var errs []error
	if b.cmd != nil {
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(stopTimeout / 4):
			b.cmd.Process.Kill()
			<-b.done
			errs = append(errs, errors.New("pgtmp: pgbouncer ignored SIGTERM; killed"))
		}
	}
	if err := os.RemoveAll(b.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtmp: %w", err))
	}
	b.stopErr = errors.Join(errs...)
	return b.stopErr
}

// start runs pgbouncer in the foreground as a child and waits until it
// accepts connections on b.port. A failed start leaves no process.
func (b *PgBouncer) start(ctx context.Context, c *Cluster, bin string) error {
	// No logfile in the config: PgBouncer logs to stderr, this file.
	logPath := filepath.Join(b.dir, bouncerLog)
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pgtmp: %w", err)
	}
	defer out.Close()
	// Not under ctx: PgBouncer outlives the start, until Stop.
	cmd := c.command(context.WithoutCancel(ctx), bin, filepath.Join(b.dir, bouncerConf))
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A test binary killed by -timeout takes PgBouncer with it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtmp: start pgbouncer: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			b.cmd, b.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("pgtmp: pgbouncer on port %d exited: %s\n%s", b.port, cmd.ProcessState, b.logTail())
		case <-ctx.Done():
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("pgtmp: pgbouncer on port %d: %w\n%s", b.port, ctx.Err(), b.logTail())
		case <-tick.C:
		}
	}
}

// openServers makes the pool hold bouncerServers server connections: as
// many clients each open a transaction at once, then end it.
func (b *PgBouncer) openServers(ctx context.Context) error {
	var conns []*pgconn.PgConn
	defer func() {
		for _, pc := range conns {
			pc.Close(context.WithoutCancel(ctx))
		}
	}()
	for range bouncerServers {
		pc, err := pgconn.Connect(ctx, b.ConnString())
		if err != nil {
			return fmt.Errorf("pgtmp: connect through pgbouncer: %w\n%s", err, b.logTail())
		}
		conns = append(conns, pc)
		if _, err := pc.Exec(ctx, "BEGIN; SELECT 1").ReadAll(); err != nil {
			return fmt.Errorf("pgtmp: through pgbouncer: %w", err)
		}
	}
	for _, pc := range conns {
		if _, err := pc.Exec(ctx, "COMMIT").ReadAll(); err != nil {
			return fmt.Errorf("pgtmp: through pgbouncer: %w", err)
		}
	}
	return nil
}

// writeConfig writes pgbouncer.ini for port, mode and the upstream server.
func (b *PgBouncer) writeConfig(port int, mode string, up *pgconn.Config) error {
	db := fmt.Sprintf("host=%s port=%d", up.Host, up.Port)
	if up.Password != "" {
		db += " password=" + bouncerQuote(up.Password)
	}
	conf := fmt.Sprintf(`; Written by pgnotify's internal/pgtmp: a throwaway PgBouncer for tests.
[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = 8
server_round_robin = 1
ignore_startup_parameters = extra_float_digits
pidfile = %s
`, db, port, filepath.Join(b.dir, bouncerUsers), mode, filepath.Join(b.dir, bouncerPIDFile))
	if err := os.WriteFile(filepath.Join(b.dir, bouncerConf), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("pgtmp: %w", err)
	}
	return nil
}

// logTail returns the end of PgBouncer's log, for errors.
func (b *PgBouncer) logTail() string {
	c := &Cluster{dir: b.dir}
	s := c.logTailOf(bouncerLog)
	return strings.Replace(s, "server log", "pgbouncer log", 1)
}

// bouncerQuote quotes s for PgBouncer's auth file and connection strings.
func bouncerQuote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// bouncerSbin is where Debian puts pgbouncer, off a user's PATH; a test
// seam, like searchPATH.
var bouncerSbin = "/usr/sbin/pgbouncer"

// findPgBouncer looks for pgbouncer on PATH, then where Debian puts it.
func findPgBouncer() (string, error) {
	if searchPATH {
		if p, err := exec.LookPath("pgbouncer"); err == nil {
			return p, nil
		}
	}
	if isExecutable(bouncerSbin) {
		return bouncerSbin, nil
	}
	return "", errors.New("pgtmp: " + missingPgBouncer)
}

// removeStaleBouncers ends the PgBouncers whose owner has exited (its
// Pdeathsig normally has) and removes their dirs. Errors are ignored.
func removeStaleBouncers() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), bouncerPrefix+"*"))
	for _, dir := range dirs {
		if !isStale(dir) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, bouncerPIDFile)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.RemoveAll(dir)
	}
}
