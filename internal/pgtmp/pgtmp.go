// Package pgtmp runs a throwaway PostgreSQL cluster for tests, examples and
// benchmarks.
//
// [Start] runs initdb and pg_ctl from the installed server binaries in a fresh
// temp dir and starts a server on a free loopback port with durability turned
// off. When the process runs as root, the server runs as the "postgres" user,
// because PostgreSQL refuses to run as root. [FromEnv] returns an existing
// server instead when one is named: PGNOTIFY_TEST_DATABASE_URL, else
// DATABASE_URL, the variable the quickstart, the examples and the pgnotify
// command read too.
//
// A process killed before it calls [Cluster.Stop] (a test binary killed by
// -timeout) leaves its server running. Each cluster's dir therefore holds its
// owner's PID, and every Start first stops and removes the clusters whose owner
// has exited.
package pgtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// envURL names an existing server to use instead of starting one: the
	// one variable that means "use this server" everywhere in pgnotify.
	envURL = "DATABASE_URL"
	// envTestURL is the tests' own name, kept from before DATABASE_URL was
	// the one; it wins, so that tests can be pointed at a server other than
	// the one an application's DATABASE_URL names.
	envTestURL = "PGNOTIFY_TEST_DATABASE_URL"

	dirPrefix = "pgnotify-pgtmp-"
	ownerFile = "owner.pid"
	logFile   = "server.log"
	dataDir   = "data"
	confFile  = "pgtmp.conf"

	// startAttempts bounds the retries when another process takes the free
	// port between freePort and the server's bind.
	startAttempts = 5

	// stopTimeout bounds Stop, which takes no context.
	stopTimeout = 2 * time.Minute

	// abandonedAge is how old a dir without a readable owner file must be
	// before another Start removes it. A younger one may belong to a Start
	// that has created the dir but not yet written the file.
	abandonedAge = 10 * time.Minute
)

// missingBinaries is the error text when no server binaries are found; it
// says what to install.
const missingBinaries = "PostgreSQL server binaries (initdb, pg_ctl) not found: " +
	"install them, e.g. `apt-get update && apt-get install -y postgresql`"

// Test seams: where the binaries are looked for besides PATH.
var (
	searchPATH = true
	binGlob    = "/usr/lib/postgresql/*/bin"
)

// Option configures [Start].
type Option func(*config)

type config struct {
	maxConnections int
	logical        bool
	// walSenderTimeout is wal_sender_timeout; 0 keeps the server's default.
	walSenderTimeout time.Duration
}

// logicalSlots is max_replication_slots and max_wal_senders under
// [WithLogicalReplication]: enough for many tests' slots and streams at once.
const logicalSlots = 32

// WithMaxConnections sets the server's max_connections. The default is 300;
// n <= 0 keeps it.
func WithMaxConnections(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxConnections = n
		}
	}
}

// WithLogicalReplication makes the server ready for logical replication:
// wal_level = logical, 32 replication slots and WAL senders, and
// synchronous_commit = on: logical decoding sends only flushed WAL, so an
// asynchronous commit would reach a consumer up to wal_writer_delay late (fsync
// stays off, so a flush stays cheap). A
// walSenderTimeout > 0 sets wal_sender_timeout (rounded down to whole
// milliseconds, at least 1 ms); 0 or less keeps the server's default (60 s).
// Without this option the server keeps PostgreSQL's wal_level (replica).
func WithLogicalReplication(walSenderTimeout time.Duration) Option {
	return func(c *config) {
		c.logical = true
		c.walSenderTimeout = 0
		if walSenderTimeout > 0 {
			c.walSenderTimeout = max(walSenderTimeout, time.Millisecond)
		}
	}
}

// Cluster is a running throwaway server. Its methods may be called from any
// goroutine.
type Cluster struct {
	bins binaries
	cred *syscall.Credential // nil: the server runs as this process's user
	dir  string              // temp dir: owner file, log, socket, data dir
	port int
	cfg  config // what Start was given; a replica is configured alike

	mu      sync.Mutex // serialises Restart and Stop; guards the fields below
	stopped bool
	stopErr error
}

// Start creates and starts a cluster and waits until it accepts connections.
// It first stops and removes the clusters of owners that have exited. ctx
// bounds initdb and the start; the server outlives ctx and runs until
// [Cluster.Stop]. The error says what to install when the server binaries are
// missing, and holds the tail of the server log when the server does not come
// up. On error nothing is left behind.
func Start(ctx context.Context, opts ...Option) (*Cluster, error) {
	cfg := config{maxConnections: 300}
	for _, o := range opts {
		o(&cfg)
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	removeStale(ctx, bins, cred)

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	c := &Cluster{bins: bins, cred: cred, dir: dir, cfg: cfg}
	ok := false
	defer func() {
		if !ok {
			c.destroy(context.WithoutCancel(ctx))
		}
	}()
	// The owner file goes first, so that the dir is never ownerless for long.
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	if err := c.chown(dir); err != nil {
		return nil, err
	}

	if out, err := c.command(ctx, bins.initdb, "-D", c.DataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtmp: initdb: %w\n%s%s", err, out, c.accessHint())
	}
	conf, err := os.OpenFile(filepath.Join(c.DataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	_, err = fmt.Fprintf(conf, "\ninclude '%s'\n", confFile)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := c.writeConfig(port, cfg); err != nil {
			return nil, err
		}
		c.port = port
		logStart := c.logSize()
		err = c.pgCtl(ctx, "start", "-l", filepath.Join(dir, logFile))
		if err == nil {
			ok = true
			return c, nil
		}
		// Only a lost race for the port is worth another try.
		if attempt == startAttempts || ctx.Err() != nil || !c.logSince(logStart, "Address already in use") {
			return nil, fmt.Errorf("pgtmp: start on port %d: %w\n%s", port, err, c.logTail())
		}
	}
}

// ConnString returns a URL that connects to the cluster's postgres database
// as the superuser postgres over TCP, without TLS or a password.
func (c *Cluster) ConnString() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port returns the loopback TCP port the server listens on. It does not
// change across [Cluster.Restart].
func (c *Cluster) Port() int { return c.port }

// DataDir returns the cluster's data directory (PGDATA). It is removed by
// [Cluster.Stop].
func (c *Cluster) DataDir() string { return filepath.Join(c.dir, dataDir) }

// Restart stops the server and starts it again on the same port, and waits
// until it accepts connections. mode is pg_ctl's shutdown mode: "fast" rolls
// back open transactions and disconnects clients cleanly (they get SQLSTATE
// 57P01); "immediate" kills every server process at once, like a crash, and
// the start runs crash recovery. Every existing connection is closed either
// way. Restart returns an error after [Cluster.Stop] and for any other mode.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	if mode != "fast" && mode != "immediate" {
		return fmt.Errorf("pgtmp: restart mode %q: want \"fast\" or \"immediate\"", mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgtmp: restart: cluster stopped")
	}
	if err := c.pgCtl(ctx, "restart", "-m", mode, "-l", filepath.Join(c.dir, logFile)); err != nil {
		return fmt.Errorf("pgtmp: restart -m %s: %w\n%s", mode, err, c.logTail())
	}
	return nil
}

// Stop shuts the server down (fast, then immediate if that fails) and removes
// its dir, data and log included. It is idempotent: later calls return the
// first call's result. It gives up after two minutes.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		c.stopErr = c.destroy(ctx)
	}
	return c.stopErr
}

// FromEnv returns the server to use. If PGNOTIFY_TEST_DATABASE_URL is set,
// it returns that, else DATABASE_URL if set, with a stop that does nothing.
// Otherwise it starts a cluster with [Start] and opts and returns its
// [Cluster.ConnString] and a stop that calls [Cluster.Stop] and reports an
// error from it on stderr. ctx bounds the start only. stop may be called
// more than once.
func FromEnv(ctx context.Context, opts ...Option) (connString string, stop func(), err error) {
	if url := EnvURL(); url != "" {
		return url, func() {}, nil
	}
	c, err := Start(ctx, opts...)
	if err != nil {
		return "", nil, err
	}
	return c.ConnString(), func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}, nil
}

// EnvURL returns the server the environment names, or "": the value of
// PGNOTIFY_TEST_DATABASE_URL if set, else of DATABASE_URL.
func EnvURL() string {
	if url := os.Getenv(envTestURL); url != "" {
		return url
	}
	return os.Getenv(envURL)
}

// destroy stops whatever server runs in c's data dir and removes c's dir.
func (c *Cluster) destroy(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); err == nil {
		if err := c.pgCtl(ctx, "stop", "-m", "fast"); err != nil {
			if err2 := c.pgCtl(ctx, "stop", "-m", "immediate"); err2 != nil {
				errs = append(errs, fmt.Errorf("pgtmp: stop: %w; %w\n%s", err, err2, c.logTail()))
			}
		}
	}
	// Removing the dir also ends a server that failed to stop: the postmaster
	// shuts down when it finds its lock file gone.
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtmp: %w", err))
	}
	return errors.Join(errs...)
}

// pgCtl runs pg_ctl action on c's data dir and waits for it to finish.
func (c *Cluster) pgCtl(ctx context.Context, action string, args ...string) error {
	args = append([]string{action, "-w", "-s", "-D", c.DataDir()}, args...)
	out, err := c.command(ctx, c.bins.pgCtl, args...).CombinedOutput()
	if err != nil {
		if out = bytes.TrimSpace(out); len(out) > 0 {
			return fmt.Errorf("pg_ctl %s: %w: %s", action, err, out)
		}
		return fmt.Errorf("pg_ctl %s: %w", action, err)
	}
	return nil
}

// command returns a command that runs as the server's user in c's dir.
func (c *Cluster) command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	// A dir the server's user may not be able to enter (root's working
	// directory) makes initdb warn; the cluster's own dir always works.
	cmd.Dir = c.dir
	cmd.Env = serverEnv()
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	// pg_ctl points the postmaster's output at the log file, so nothing
	// should hold our pipes open after pg_ctl exits; this bounds the wait if
	// something does.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// writeConfig writes the settings that initdb's defaults lack.
func (c *Cluster) writeConfig(port int, cfg config) error {
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	conf := fmt.Sprintf(`# Written by pgnotify's internal/pgtmp: a throwaway test server.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = %s
max_connections = %d
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
`, port, quote(c.dir), cfg.maxConnections)
	if cfg.logical {
		conf += fmt.Sprintf("wal_level = logical\nmax_replication_slots = %d\nmax_wal_senders = %d\nsynchronous_commit = on\n",
			logicalSlots, logicalSlots)
		if cfg.walSenderTimeout > 0 {
			conf += fmt.Sprintf("wal_sender_timeout = '%dms'\n", cfg.walSenderTimeout.Milliseconds())
		}
	}
	path := filepath.Join(c.DataDir(), confFile)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("pgtmp: %w", err)
	}
	return c.chown(path)
}

// chown hands path to the server's user, if that is another user.
func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("pgtmp: %w", err)
	}
	return nil
}

// accessHint explains the likeliest initdb failure when the server runs as
// another user.
func (c *Cluster) accessHint() string {
	if c.cred == nil {
		return ""
	}
	return fmt.Sprintf("(initdb runs as user postgres, which must be able to reach %s; set TMPDIR to change where it is)", c.dir)
}

func (c *Cluster) logSize() int64 {
	fi, err := os.Stat(filepath.Join(c.dir, logFile))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince reports whether the log, from offset on, contains s.
func (c *Cluster) logSince(offset int64, s string) bool {
	f, err := os.Open(filepath.Join(c.dir, logFile))
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<30))
	return err == nil && bytes.Contains(b, []byte(s))
}

// logTail returns the last lines of the server log, for errors.
func (c *Cluster) logTail() string { return c.logTailOf(logFile) }

// logTailOf returns the last lines of the log file name in c's dir.
func (c *Cluster) logTailOf(name string) string {
	const maxBytes = 4 << 10
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "server log (tail):\n" + string(b)
}

type binaries struct {
	initdb, pgCtl string
}

// findBinaries looks for initdb and pg_ctl on PATH, then in the highest
// version under /usr/lib/postgresql (Debian and Ubuntu keep them off PATH).
func findBinaries() (binaries, error) {
	if searchPATH {
		initdb, err1 := exec.LookPath("initdb")
		pgCtl, err2 := exec.LookPath("pg_ctl")
		if err1 == nil && err2 == nil {
			return binaries{initdb, pgCtl}, nil
		}
	}
	dirs, _ := filepath.Glob(binGlob)
	// Highest version first: "16" before "9.6".
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		b := binaries{filepath.Join(d, "initdb"), filepath.Join(d, "pg_ctl")}
		if isExecutable(b.initdb) && isExecutable(b.pgCtl) {
			return b, nil
		}
	}
	return binaries{}, errors.New("pgtmp: " + missingBinaries)
}

// compareVersions compares dotted numeric versions such as "9.6" and "15".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverCredential returns the user the server runs as: nil (this process's
// user) unless this process is root, which PostgreSQL refuses to run as.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtmp: running as root, and PostgreSQL refuses to run as root, "+
			"so the server runs as user postgres, which is missing (installing the postgresql package creates it): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtmp: user postgres: %w", err)
	}
	// An empty Groups drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// serverEnv is this process's environment without the PG* variables, which
// would steer initdb and pg_ctl, and with the C locale, so that the log is in
// English and Start's retry can read it.
func serverEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=")
	})
	return append(env, "LC_ALL=C", "LANG=C")
}

// freePort returns a loopback TCP port that was free a moment ago. Another
// process may take it before the server binds it; Start then retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtmp: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeStale stops and removes the clusters in the temp dir whose owner has
// exited, and dirs that never got an owner. Errors are ignored: the dir may
// belong to another user, or another Start may be removing it too.
func removeStale(ctx context.Context, bins binaries, cred *syscall.Credential) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		if !isStale(dir) {
			continue
		}
		c := &Cluster{bins: bins, cred: cred, dir: dir}
		if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); err == nil {
			stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_ = c.pgCtl(stopCtx, "stop", "-m", "immediate")
			cancel()
		}
		_ = os.RemoveAll(dir)
	}
}

// isStale reports whether dir's owner has exited. A PID that has been
// reused counts as alive, which leaves the dir for a later Start.
func isStale(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		fi, err := os.Stat(dir)
		return err == nil && time.Since(fi.ModTime()) > abandonedAge
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// Main runs m's tests with a server from [FromEnv], handing its connection
// string to use before they start, and returns the exit code for os.Exit.
// A server that cannot be had fails the run with the reason, naming who
// needed it: without one, the tests would prove nothing. after, if not nil,
// runs once the tests are done, with the server still up, and returns the
// final code (a leak check turns a pass into a failure there).
func Main(m *testing.M, who string, use func(connString string), after func(code int) int) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	url, stop, err := FromEnv(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: no server (go test -short runs the server-free subset): %v\n", who, err)
		return 1
	}
	defer stop()
	use(url)
	code := m.Run()
	if after != nil {
		code = after(code)
	}
	return code
}
