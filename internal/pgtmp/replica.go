package pgtmp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// StartReplica starts a hot standby streaming from c: pg_basebackup -R of c
// (a fast checkpoint, WAL streamed) into a fresh temp dir, started on a free
// loopback port of its own, run as the same user as c. It waits until the
// standby accepts connections (read-only, pg_is_in_recovery() true). Stop it
// with its own [Cluster.Stop]; [Cluster.Promote] makes it a primary. ctx
// bounds the copy and the start. On error nothing is left behind.
func (c *Cluster) StartReplica(ctx context.Context) (*Cluster, error) {
	basebackup, err := findBaseBackup(c.bins)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	r := &Cluster{bins: c.bins, cred: c.cred, dir: dir, cfg: c.cfg}
	ok := false
	defer func() {
		if !ok {
			r.destroy(context.WithoutCancel(ctx))
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pgtmp: %w", err)
	}
	if err := r.chown(dir); err != nil {
		return nil, err
	}
	// -R writes standby.signal and primary_conninfo (this port); the copy
	// keeps c's pgtmp.conf, which writeConfig then points at r's own port
	// and socket dir.
	if out, err := r.command(ctx, basebackup, "-D", r.DataDir(), "-R", "-X", "stream", "-c", "fast", "--no-sync",
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtmp: pg_basebackup: %w\n%s", err, out)
	}
	// The copy's postmaster.pid is not copied, but its opts file is: harmless.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := r.writeConfig(port, r.cfg); err != nil {
			return nil, err
		}
		r.port = port
		logStart := r.logSize()
		err = r.pgCtl(ctx, "start", "-l", filepath.Join(dir, logFile))
		if err == nil {
			ok = true
			return r, nil
		}
		if attempt == startAttempts || ctx.Err() != nil || !r.logSince(logStart, "Address already in use") {
			return nil, fmt.Errorf("pgtmp: start replica on port %d: %w\n%s", port, err, r.logTail())
		}
	}
}

// Promote makes a standby started by [Cluster.StartReplica] a primary
// (pg_ctl promote) and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("pgtmp: promote: cluster stopped")
	}
	if err := c.pgCtl(ctx, "promote"); err != nil {
		return fmt.Errorf("pgtmp: promote: %w\n%s", err, c.logTail())
	}
	return nil
}

// findBaseBackup looks for pg_basebackup beside initdb (the link's target
// when initdb is a link), then on PATH.
func findBaseBackup(bins binaries) (string, error) {
	dirs := []string{filepath.Dir(bins.initdb)}
	if real, err := filepath.EvalSymlinks(bins.initdb); err == nil {
		dirs = append([]string{filepath.Dir(real)}, dirs...)
	}
	for _, d := range dirs {
		if p := filepath.Join(d, "pg_basebackup"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pg_basebackup"); err == nil {
		return p, nil
	}
	return "", errors.New("pgtmp: pg_basebackup not found beside initdb or on PATH: install the PostgreSQL server package, " +
		"e.g. `apt-get update && apt-get install -y postgresql`")
}
