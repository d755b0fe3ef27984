// Command pgnotify watches and sends PostgreSQL notifications from a
// terminal or a script.
//
//	pgnotify listen [-d URL]... [-format json|text] [-n COUNT] [-idle DUR] CHANNEL...
//	pgnotify notify [-d URL] CHANNEL [PAYLOAD]
//	pgnotify stats  [-d URL]
//	pgnotify emit   [-d URL] CHANNEL [PAYLOAD]
//	pgnotify listen -durable -slot NAME [-create-slot] CHANNEL...
//	pgnotify slots  [-d URL] [-drop NAME]
//
// listen prints one line per notification, as it arrives, from every database
// at once, and reconnects by itself; notify sends one payload, or every line
// of standard input in one transaction; stats shows how full the server's
// notification queue is; emit and listen -durable do what notify and listen
// do over package durable, where nothing is lost while no one listens;
// slots lists durable slots with the WAL they hold back, and drops one.
// Run pgnotify -h for the whole usage.
//
// Install it with
//
//	go install ./cmd/pgnotify   # from a checkout of the repository
//
// or, once the module is published,
//
//	go install github.com/seed-c59d106d/pgnotify/cmd/pgnotify@latest
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure: unreachable server, server error
	exitUsage   = 2 // usage or invalid input: nothing was sent
	exitTimeout = 3 // listen: -idle ended a -n listen before COUNT lines
	exitUnknown = 4 // notify, emit: the connection broke after COMMIT was sent
)

// codeError is a failure with an exit code of its own (exitTimeout,
// exitUnknown); its message is printed as any other.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// A command is one subcommand. A new one lives in a file of its own and
// joins commands (a file may append itself in an init function, as listen
// modes do with listenModes).
type command struct {
	name     string
	synopsis string // the arguments after the name, for -h
	summary  string // one line for pgnotify -h
	// usage is the command's -h text after its flag defaults: arguments,
	// behaviour, examples.
	usage string
	// flags defines the command's flags on fs and returns the function
	// that runs it with the remaining arguments once they are parsed.
	flags func(fs *flag.FlagSet) func(ctx context.Context, env *env, args []string) error
}

// commands is the subcommand table, in the order pgnotify -h lists them.
var commands = []*command{listenCommand, notifyCommand, statsCommand}

// env is what a command may touch of the process: its streams and
// environment, so that main is the only place that knows about os.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	stdoutIsTTY    bool
	getenv         func(string) string
}

// main leaves signals alone: Ctrl-C kills notify and stats, which is safe
// (notify sends in one transaction, so an interrupted one sends nothing);
// listen catches it to exit 0 with a summary.
func main() {
	e := &env{
		stdin:       os.Stdin,
		stdout:      os.Stdout,
		stderr:      os.Stderr,
		stdoutIsTTY: isTerminal(os.Stdout),
		getenv:      os.Getenv,
	}
	os.Exit(run(context.Background(), e, os.Args[1:]))
}

// isTerminal reports whether f is a character device, which is as close to
// "a terminal" as the standard library gets.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// usageError is invalid input: the command line or the data to send. It
// exits 2, and nothing has been sent.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run runs the command line args and returns the exit code. Every error is
// printed as one line on stderr.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "pgnotify: no command (see pgnotify -h)")
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		writeUsage(e.stdout)
		return exitOK
	}
	var cmd *command
	for _, c := range commands {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(e.stderr, "pgnotify: unknown command %q (see pgnotify -h)\n", args[0])
		return exitUsage
	}

	fs := flag.NewFlagSet("pgnotify "+cmd.name, flag.ContinueOnError)
	// Errors are reported here, in one line; -h prints to stdout.
	fs.SetOutput(io.Discard)
	runCmd := cmd.flags(fs)
	rest, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		writeCommandUsage(e.stdout, cmd, fs)
		return exitOK
	}
	if err == nil {
		err = runCmd(ctx, e, rest)
	}
	var ue *usageError
	var ce *codeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		fmt.Fprintf(e.stderr, "pgnotify %s: %s\n", cmd.name, oneLine(err))
		return ce.code
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "pgnotify %s: %s (see pgnotify %s -h)\n", cmd.name, oneLine(err), cmd.name)
		return exitUsage
	case isFlagError(err):
		fmt.Fprintf(e.stderr, "pgnotify %s: %s (see pgnotify %s -h)\n", cmd.name, oneLine(err), cmd.name)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "pgnotify %s: %s\n", cmd.name, oneLine(err))
		return exitFailure
	}
}

// flagError marks an error from parsing flags.
type flagError struct{ err error }

func (e *flagError) Error() string { return e.err.Error() }
func (e *flagError) Unwrap() error { return e.err }

func isFlagError(err error) bool {
	var fe *flagError
	return errors.As(err, &fe)
}

// parseInterspersed parses flags anywhere among the arguments, so that
// "listen orders -n 1" works as "listen -n 1 orders" does; the flag
// package alone stops at the first argument that is not a flag. After "--"
// every argument is positional, for channels or payloads that begin with
// "-".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &flagError{err}
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// oneLine joins a multi-line error message into one line. pgx puts each
// address it tried on a line of its own, and the same one twice when it
// tried with and without TLS: repeats are dropped.
func oneLine(err error) string {
	var parts []string
	for _, f := range strings.Split(err.Error(), "\n") {
		f = strings.TrimRight(strings.TrimSpace(f), ":")
		if f != "" && !slices.Contains(parts, f) {
			parts = append(parts, f)
		}
	}
	if len(parts) > 1 {
		return parts[0] + ": " + strings.Join(parts[1:], "; ")
	}
	return strings.Join(parts, "")
}

// writeUsage writes pgnotify -h.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, `pgnotify watches and sends PostgreSQL LISTEN/NOTIFY notifications.

Usage:
  pgnotify <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run pgnotify <command> -h for a command's flags and examples.

`+connectionHelp+`
Exit status: 0 ok (also after listen's -n or -idle, or Ctrl-C); 1 runtime
failure (unreachable server, server error); 2 usage or invalid input
(unknown command or flag, no channel, an invalid channel name, a payload too
long: 8000 bytes or more for notify, over 64 MiB for emit; a notify payload
that is not UTF-8), in which case nothing was sent; 3 listen's -idle ended
a -n listen before COUNT lines ("timed out"); 4 notify or emit lost the
connection after sending COMMIT: the payloads may or may not have been
delivered (check before sending again). Every error is one line on
standard error.

Examples:
  pgnotify listen orders                       # watch one channel
  pgnotify listen -d $ORDERS_DB -d $BILLING_DB jobs   # two databases at once
  pgnotify notify orders '{"id": 42}'          # send one
  seq 3 | pgnotify notify jobs                 # send "1", "2", "3" in one transaction
  pgnotify stats                               # how full is the notification queue?
  pgnotify emit invoices 42                    # durable: kept in a replication slot
  pgnotify listen -durable -slot mailer -create-slot invoices   # read them, nothing lost
  pgnotify slots                               # durable slots and the WAL they hold back
`)
}

// connectionHelp says where the connection string comes from; every
// command's help includes it.
const connectionHelp = `Connecting: -d URL (a postgres:// URL or "host=... dbname=..." keywords), else
$DATABASE_URL, else the libpq variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, PGSSLMODE, ...) and ~/.pgpass, as pgx reads them. Without
connect_timeout in it, connecting gives up after 10s.
`

// writeCommandUsage writes pgnotify CMD -h.
func writeCommandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	summary := strings.ToUpper(c.summary[:1]) + c.summary[1:]
	fmt.Fprintf(w, "Usage: pgnotify %s %s\n\n%s.\n\nFlags:\n", c.name, c.synopsis, summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintf(w, "\n%s\n%s", strings.TrimSpace(c.usage)+"\n", connectionHelp)
}
