package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
)

// queueBytesBefore17 is the notification queue's size before PostgreSQL 17,
// where it is fixed: 8 GB in a standard build.
const queueBytesBefore17 = 8 << 30

var statsCommand = &command{
	name:     "stats",
	synopsis: "[-d URL] [-format json|text]",
	summary:  "show how full the server's notification queue is, and what that means",
	usage: `
stats prints pg_notification_queue_usage(): the fraction of the server's
notification queue (8 GB by default; max_notify_queue_pages on PostgreSQL 17
and later) holding notifications that some listening session has not read
yet. The queue is shared by every database of the server.

Near 0 is normal. A fraction that keeps growing means a listening session is
not reading: a stalled consumer, or a listener sitting in a long transaction
(notifications are delivered only between transactions). At 100% every
NOTIFY on the server fails until that session reads or goes away; the server
log names its PID.

Examples:
  pgnotify stats
  pgnotify stats -format json -d postgres://app@db1/app | jq .usage
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		url := singleDatabase(fs)
		var format formatFlag
		fs.Var(&format, "format", "output `FORMAT`: json or text (default json when standard output is\nnot a terminal, else text)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("stats takes no arguments, got %q", args[0])
			}
			return stats(ctx, e, *url, format)
		}
	},
}

func stats(ctx context.Context, e *env, url string, format formatFlag) error {
	db, err := oneDatabase(e, url)
	if err != nil {
		return err
	}
	conn, err := db.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var usage float64
	var pages *string // NULL before PostgreSQL 17
	var blockSize int64
	err = conn.QueryRow(ctx, `SELECT pg_notification_queue_usage(),
		current_setting('max_notify_queue_pages', true),
		current_setting('block_size')::bigint`).Scan(&usage, &pages, &blockSize)
	if err != nil {
		return fmt.Errorf("%s: %w", db.label, err)
	}
	capacity := int64(queueBytesBefore17)
	if pages != nil {
		if n, err := strconv.ParseInt(*pages, 10, 64); err == nil {
			capacity = n * blockSize
		}
	}

	if format == "json" || (format == "" && !e.stdoutIsTTY) {
		_, err = e.stdout.Write(appendJSON(nil, struct {
			DB            string  `json:"db"`
			Usage         float64 `json:"usage"`
			CapacityBytes int64   `json:"capacity_bytes"`
		}{db.label, usage, capacity}))
		return err
	}
	meaning := "normal: listeners keep up"
	switch {
	case usage >= 0.5:
		meaning = "DANGER: at 100% every NOTIFY on the server fails; find the listener that is not reading (the server log names its PID)"
	case usage >= 0.01:
		meaning = "listeners are behind; if this keeps growing, one is not reading (stalled, or in a long transaction)"
	}
	_, err = fmt.Fprintf(e.stdout, "%s: notification queue %.4f%% used of %s: %s\n",
		db.label, usage*100, byteSize(capacity), meaning)
	return err
}

// byteSize formats n bytes in the largest binary unit that keeps it whole
// enough to read.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g %cB", float64(n)/float64(div), "KMGTPE"[exp])
}
