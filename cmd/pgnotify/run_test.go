package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// cliEnv is the environment pgnotify runs in: this process's, without any
// variable that says which server to use, plus extra.
func cliEnv(extra ...string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// result is how a run of pgnotify ended.
type result struct {
	code           int
	stdout, stderr string
}

// stderrLines returns the non-empty lines of standard error.
func (r result) stderrLines() []string { return lines(r.stderr) }

func lines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' })
}

// run runs pgnotify with args and stdin, in env (nil: cliEnv()), and waits
// for it to exit.
func run(t testing.TB, ctx context.Context, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	if env == nil {
		env = cliEnv()
	}
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("pgnotify %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("pgnotify %s: still running when the test's time ran out; stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// requireOneErrorLine fails t unless r exited with code and said why in
// exactly one line on standard error, containing each of want.
func requireOneErrorLine(t testing.TB, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, code, r.stderr)
	}
	ls := r.stderrLines()
	if len(ls) != 1 {
		t.Fatalf("stderr has %d lines, want one:\n%s", len(ls), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(ls[0], w) {
			t.Errorf("stderr %q does not mention %q", ls[0], w)
		}
	}
}

// listener is a running pgnotify listen.
type listener struct {
	t      testing.TB
	cmd    *exec.Cmd
	lines  chan string // standard output, line by line; closed at EOF
	stderr chan string // standard error, line by line; closed at EOF
	ready  string      // the "listening on" line
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed
}

// startListen starts pgnotify listen with args (after "listen") and waits
// until it says it is listening. It is killed when t ends if it is still
// running.
func startListen(t testing.TB, ctx context.Context, env []string, args ...string) *listener {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"listen"}, args...)...)
	if env == nil {
		env = cliEnv()
	}
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{t: t, cmd: cmd, lines: make(chan string, 100), stderr: make(chan string, 100), exited: make(chan struct{})}
	readers := make(chan struct{}, 2)
	scan := func(r io.Reader, into chan<- string) {
		defer func() { readers <- struct{}{} }()
		defer close(into)
		s := bufio.NewScanner(r)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			into <- s.Text()
		}
	}
	go scan(stdout, l.lines)
	go scan(stderr, l.stderr)
	go func() {
		// Wait closes the pipes, so it must come after the readers are done
		// (os/exec: "it is incorrect to call Wait before all reads").
		<-readers
		<-readers
		l.err = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		// Unread lines would keep the readers blocked: drop them.
		go func() {
			for range l.lines {
			}
		}()
		go func() {
			for range l.stderr {
			}
		}()
		<-l.exited
	})

	select {
	case line, ok := <-l.stderr:
		if !ok || !strings.Contains(line, "listening on") {
			t.Fatalf("pgnotify listen %s: want a \"listening on\" line on stderr, got %q (exit: %v)", strings.Join(args, " "), line, l.wait(ctx))
		}
		l.ready = line
	case <-ctx.Done():
		t.Fatalf("pgnotify listen %s: not listening when the test's time ran out", strings.Join(args, " "))
	}
	return l
}

// next returns the next line of standard output. It fails t if there is
// none before ctx ends or the process exits.
func (l *listener) next(ctx context.Context) string {
	l.t.Helper()
	select {
	case line, ok := <-l.lines:
		if !ok {
			l.t.Fatalf("pgnotify listen exited (%v) before the line the test waits for", l.wait(ctx))
		}
		return line
	case <-ctx.Done():
		l.t.Fatal("timed out waiting for a line from pgnotify listen")
	}
	return ""
}

// nextJSON returns the next line of standard output, parsed as a JSON object.
func (l *listener) nextJSON(ctx context.Context) map[string]any {
	l.t.Helper()
	line := l.next(ctx)
	var obj map[string]any
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		l.t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	return obj
}

// wait waits for the process to exit and returns its exit code, or -1 if
// ctx ends first. Output not read yet stays in l.lines and l.stderr.
func (l *listener) wait(ctx context.Context) int {
	l.t.Helper()
	select {
	case <-l.exited:
	case <-ctx.Done():
		l.t.Errorf("pgnotify listen did not exit in time")
		return -1
	}
	var exit *exec.ExitError
	if l.err != nil && !errors.As(l.err, &exit) {
		l.t.Fatalf("pgnotify listen: %v", l.err)
	}
	return l.cmd.ProcessState.ExitCode()
}

// rest returns the lines of ch still to be read, once the process is done.
func rest(ch <-chan string) []string {
	var ls []string
	for line := range ch {
		ls = append(ls, line)
	}
	return ls
}

// interrupt sends SIGINT, as Ctrl-C does.
func (l *listener) interrupt() {
	l.t.Helper()
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		l.t.Fatal(err)
	}
}

// dbURL returns the test server's connection string for database dbname
// with the query parameters params ("key=value"), as a URL.
func dbURL(t testing.TB, dbname string, params ...string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "postgres", Host: cfg.Host + ":" + strconv.Itoa(int(cfg.Port)), Path: "/" + dbname}
	if cfg.Password != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	} else {
		u.User = url.User(cfg.User)
	}
	q := url.Values{}
	if strings.HasPrefix(cfg.Host, "/") {
		// A Unix socket dir goes in the query; a URL's host cannot hold it.
		u.Host = ""
		q.Set("host", cfg.Host)
		q.Set("port", strconv.Itoa(int(cfg.Port)))
	}
	if cfg.TLSConfig == nil {
		q.Set("sslmode", "disable")
	}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// label is the label pgnotify gives dbURL(t, dbname).
func label(t testing.TB, dbname string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + dbname
}

// connect opens a connection of the test's own to dbname, closed when t
// ends (waiting for pgconn's cleanup, for the leak check).
func connect(t testing.TB, dbname string) *pgx.Conn {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL(t, dbname))
	if err != nil {
		t.Fatalf("connect to %s: %v", dbname, err)
	}
	t.Cleanup(func() {
		if err := testkit.CloseConn(conn); err != nil {
			t.Error(err)
		}
	})
	return conn
}
