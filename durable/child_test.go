package durable_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
)

// childMain is the consumer process. It prints one line per event:
// "batch LSN PAYLOAD,PAYLOAD", "dead", "recovered", and "holding LSN" when
// it reaches the batch to hold, which it then keeps until killed.
func childMain() int {
	hold, _ := strconv.Atoi(os.Getenv(childHold))
	ctx := context.Background()
	s, err := durable.Open(ctx, os.Getenv(childURL), os.Getenv(childSlot), []string{os.Getenv(childChannel)},
		durable.WithStatusInterval(50*time.Millisecond), durable.WithReconnect(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		fmt.Println("error", err)
		return 1
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

// child is a running consumer process.
type child struct {
	cmd   *exec.Cmd
	lines chan string // its output, line by line; closed when it exits
}

// startChild starts a consumer of slot's channel that holds its hold-th
// batch. It is killed, if still running, when t ends.
func startChild(t *testing.T, slot, channel string, hold int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childURL+"="+connString, childSlot+"="+slot,
		childChannel+"="+channel, childHold+"="+strconv.Itoa(hold))
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
