package durable_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// The crash tests run a consumer in a child process (this test binary
// again, with childEnv set), so that it can be killed with SIGKILL like a
// crashed program: no Close, no last acknowledgement.
const (
	childEnv     = "DURABLE_TEST_CHILD"      // set: run childMain instead of the tests
	childURL     = "DURABLE_TEST_CHILD_URL"  // connection string
	childSlot    = "DURABLE_TEST_CHILD_SLOT" // slot to read
	childChannel = "DURABLE_TEST_CHILD_CHAN" // channel to read
	childHold    = "DURABLE_TEST_CHILD_HOLD" // hold (never acknowledge) the n-th batch, from 1
	childMode    = "DURABLE_TEST_CHILD_MODE" // "" (quick status updates), "default" (no options) or "parallel"
)

// childMain is the consumer process. It prints one line per event:
// "batch LSN PAYLOAD,PAYLOAD", "dead", "recovered", and "holding LSN" when
// it reaches the batch to hold, which it then keeps until killed. In mode
// "parallel" it hands batches to workers instead (see parallelChild).
func childMain() int {
	hold, _ := strconv.Atoi(os.Getenv(childHold))
	ctx := context.Background()
	var opts []durable.Option
	switch os.Getenv(childMode) {
	case "":
		opts = []durable.Option{durable.WithStatusInterval(50 * time.Millisecond), durable.WithReconnect(20*time.Millisecond, 200*time.Millisecond)}
	case "parallel":
		opts = []durable.Option{durable.WithManualAck()}
	}
	s, err := durable.Open(ctx, os.Getenv(childURL), os.Getenv(childSlot), []string{os.Getenv(childChannel)}, opts...)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if os.Getenv(childMode) == "parallel" {
		return parallelChild(ctx, s, hold)
	}
	out := bufio.NewWriter(os.Stdout)
	for n := 0; ; {
		ev, err := s.Next(ctx)
		if err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			return 1
		}
		switch ev.Kind {
		case pgnotify.Batch:
			n++
			var p []string
			for _, m := range ev.Notifications {
				p = append(p, m.Payload)
			}
			fmt.Fprintf(out, "batch %d %s\n", ev.LSN, strings.Join(p, ","))
			if n == hold {
				fmt.Fprintf(out, "holding %d\n", ev.LSN)
				out.Flush()
				select {} // until SIGKILL
			}
		case pgnotify.Dead:
			fmt.Fprintln(out, "dead")
		case pgnotify.Recovered:
			fmt.Fprintln(out, "recovered")
		}
		out.Flush()
	}
}

// parallelChild hands each batch to one of four workers, which acknowledge
// it with Ack in whatever order they finish, except the hold-th batch, which
// its worker keeps until the process is killed. Workers print "acked LSN"
// and "holding LSN"; the other batches' order of acknowledgement depends on
// the scheduler, as in a real dispatcher.
func parallelChild(ctx context.Context, s *durable.Stream, hold int) int {
	var mu sync.Mutex // serialises output lines
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	work := make(chan pgnotify.Event)
	for range 4 {
		go func() {
			for ev := range work {
				if ev.Notifications[0].Payload == strconv.Itoa(hold) {
					say("holding %d", ev.LSN)
					continue // never acknowledged
				}
				if err := s.Ack(ev.LSN); err != nil {
					say("error %v", err)
					continue
				}
				say("acked %d", ev.LSN)
			}
		}()
	}
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			say("error %v", err)
			return 1
		}
		if ev.Kind == pgnotify.Batch {
			work <- ev
		}
	}
}

// child is a running consumer process.
type child struct {
	cmd   *exec.Cmd
	lines chan string // its output, line by line; closed when it exits
}

// startChild starts a consumer of slot's channel that holds its hold-th
// batch, with quick status updates. It is killed, if still running, when t
// ends.
func startChild(t *testing.T, slot, channel string, hold int) *child {
	t.Helper()
	return startChildMode(t, slot, channel, hold, "")
}

// startChildMode starts a consumer in mode (see childMode).
func startChildMode(t *testing.T, slot, channel string, hold int, mode string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childURL+"="+connString, childSlot+"="+slot,
		childChannel+"="+channel, childHold+"="+strconv.Itoa(hold), childMode+"="+mode)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(c.kill)
	return c
}

// kill sends SIGKILL and reaps the process; its output goroutine ends with
// the pipe.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// line returns the child's next output line, failing t if there is none in
// time.
func (c *child) line(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatal("the consumer process exited")
		}
		return l
	case <-ctx.Done():
		t.Fatal("timed out waiting for the consumer process")
	}
	return ""
}
