package natsbridge_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// The crash tests run bridges in child processes (this test binary again,
// with childEnv set), so that one can be killed with SIGKILL like a crashed
// program: no Close, no last acknowledgement.
const (
	childEnv     = "NATSBRIDGE_TEST_CHILD"      // set: run childMain instead of the tests
	childURL     = "NATSBRIDGE_TEST_CHILD_URL"  // PostgreSQL connection string
	childNATS    = "NATSBRIDGE_TEST_CHILD_NATS" // NATS URL
	childSlot    = "NATSBRIDGE_TEST_CHILD_SLOT"
	childChannel = "NATSBRIDGE_TEST_CHILD_CHAN"
)

// childMain is a bridge process, as pgnotify bridge -durable runs one: it
// opens the slot, retrying while another bridge holds it ("waiting" once),
// says "bridging", and runs natsbridge.Durable until killed.
func childMain() int {
	ctx := context.Background()
	nc, err := nats.Connect(os.Getenv(childNATS), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var s *durable.Stream
	for waiting := false; ; {
		s, err = durable.Open(ctx, os.Getenv(childURL), os.Getenv(childSlot), []string{os.Getenv(childChannel)},
			durable.WithReconnect(20*time.Millisecond, 200*time.Millisecond), durable.WithManualAck())
		if !errors.Is(err, durable.ErrSlotInUse) {
			break
		}
		if !waiting {
			fmt.Println("waiting")
			waiting = true
		}
		time.Sleep(50 * time.Millisecond) // polling the slot, as the bridge command does
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("bridging")
	err = natsbridge.Durable(ctx, s, js, natsbridge.WithEventFunc(func(ev pgnotify.Event) { fmt.Println(ev.Kind) }))
	fmt.Println("error", err)
	return 1
}

// child is a running bridge process.
type child struct {
	cmd   *exec.Cmd
	lines chan string // its output, line by line; closed when it exits
}

// startChild starts a bridge process on slot's channel; it is killed, if
// still running, when t ends.
func startChild(t *testing.T, natsURL, slot, channel string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childURL+"="+connString, childNATS+"="+natsURL,
		childSlot+"="+slot, childChannel+"="+channel)
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

// kill sends SIGKILL and reaps the process.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		for range c.lines { // until its output goroutine has ended
		}
	}
}

// expect waits for the child's next line and fails t unless it is want.
func (c *child) expect(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("the bridge process exited before saying %q", want)
		}
		if l != want {
			t.Fatalf("the bridge process said %q, want %q", l, want)
		}
	case <-ctx.Done():
		t.Fatalf("timed out waiting for the bridge process to say %q", want)
	}
}
