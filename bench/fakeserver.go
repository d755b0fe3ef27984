package main

// The fake server: a minimal PostgreSQL wire-protocol server on pgproto3
// that streams NotificationResponse messages on command. It runs in a child
// process (the bench binary re-executed with the hidden subcommand
// fakeServerCmd), so that its CPU time never counts against the client being
// measured: getrusage(RUSAGE_SELF) in the parent sees only the client.
//
// The child listens on a loopback port, prints "addr HOST:PORT" on stdout,
// then reads one command per line on stdin and answers each with one line:
//
//	stream CHANNEL N        every connection listening on CHANNEL gets N
//	                        notifications with a 64-byte payload, written as
//	                        fast as the socket takes them from a pre-encoded
//	                        buffer; answer "ok CONNS"
//	rate CHANNEL N PERSEC   N notifications in total at PERSEC per second,
//	                        round-robin over the connections listening on
//	                        CHANNEL, each payload starting with the send time
//	                        (Unix ns, 19 digits); answer "ok CONNS" at once
//	streamrr PREFIX C N     every connection listening on PREFIX_0 gets N
//	                        notifications round-robin over the channels
//	                        PREFIX_0 .. PREFIX_{C-1} (N a multiple of C), as
//	                        fast as the socket takes them; answer "ok CONNS"
//	count CHANNEL           answer "ok CONNS"
//	quit                    exit
//
// To a client it looks like this: startup (AuthenticationOk, a few
// ParameterStatus, BackendKeyData, ReadyForQuery); simple queries only:
// LISTEN/UNLISTEN answer CommandComplete, "SELECT pg_listening_channels()"
// one row per channel, an empty query or a comment ("-- ping", lib/pq's
// Ping sends "") EmptyQueryResponse, anything else an ErrorResponse; every
// query ends with ReadyForQuery 'I'. Extended-protocol messages get an
// ErrorResponse at Sync.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeServerCmd is the hidden subcommand that runs the fake server.
const fakeServerCmd = "__fakeserver"

// payloadLen is the payload size of every streamed notification.
const payloadLen = 64

// fakeServer is the child process's state.
type fakeServer struct {
	mu     sync.Mutex
	conns  map[*fakeConn]struct{}
	nextID atomic.Uint32
}

// fakeConn is one client connection to the fake server.
type fakeConn struct {
	pid  uint32
	nc   net.Conn
	wmu  sync.Mutex // serialises writes: query answers and streamed chunks
	mu   sync.Mutex // guards chans
	chns map[string]struct{}
}

// runFakeServer is the child's main.
func runFakeServer() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := &fakeServer{conns: make(map[*fakeConn]struct{})}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(nc)
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "addr %s\n", ln.Addr())
	out.Flush()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var reply string
		switch {
		case f[0] == "quit":
			return nil
		case f[0] == "count" && len(f) == 2:
			reply = fmt.Sprintf("ok %d", len(s.listeners(f[1])))
		case f[0] == "stream" && len(f) == 3:
			n, err := strconv.Atoi(f[2])
			if err != nil {
				reply = "error " + err.Error()
				break
			}
			cs := s.listeners(f[1])
			for _, c := range cs {
				go c.stream(f[1], n)
			}
			reply = fmt.Sprintf("ok %d", len(cs))
		case f[0] == "streamrr" && len(f) == 4:
			c, err1 := strconv.Atoi(f[2])
			n, err2 := strconv.Atoi(f[3])
			if err := errors.Join(err1, err2); err != nil || c <= 0 || n%c != 0 {
				reply = fmt.Sprintf("error streamrr: bad counts %q %q", f[2], f[3])
				break
			}
			cs := s.listeners(f[1] + "_0")
			for _, conn := range cs {
				go conn.streamRR(f[1], c, n)
			}
			reply = fmt.Sprintf("ok %d", len(cs))
		case f[0] == "rate" && len(f) == 4:
			n, err1 := strconv.Atoi(f[2])
			perSec, err2 := strconv.ParseFloat(f[3], 64)
			if err := errors.Join(err1, err2); err != nil {
				reply = "error " + err.Error()
				break
			}
			cs := s.listeners(f[1])
			go paced(f[1], cs, n, perSec)
			reply = fmt.Sprintf("ok %d", len(cs))
		default:
			reply = "error unknown command"
		}
		fmt.Fprintln(out, reply)
		out.Flush()
	}
	return in.Err()
}

// listeners returns the connections listening on channel.
func (s *fakeServer) listeners(channel string) []*fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*fakeConn
	for c := range s.conns {
		c.mu.Lock()
		_, ok := c.chns[channel]
		c.mu.Unlock()
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// serve runs one connection until the client leaves.
func (s *fakeServer) serve(nc net.Conn) {
	defer nc.Close()
	c := &fakeConn{pid: 1000 + s.nextID.Add(1), nc: nc, chns: make(map[string]struct{})}
	be := pgproto3.NewBackend(nc, nil)
	if err := c.startup(be); err != nil {
		return
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	extErr := false // an extended-protocol message awaits its Sync
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			if err := c.write(c.answer(m.String)); err != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		case *pgproto3.Sync:
			var b []byte
			if extErr {
				b = appendMsg(b, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000",
					Message: "the bench fake server speaks only the simple query protocol"})
			}
			extErr = false
			b = appendMsg(b, &pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := c.write(b); err != nil {
				return
			}
		case *pgproto3.Flush:
		default:
			extErr = true
		}
	}
}

// startup answers the startup packet: no TLS, no authentication.
func (c *fakeConn) startup(be *pgproto3.Backend) error {
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case *pgproto3.StartupMessage:
		default:
			return errors.New("fake server: unexpected startup message")
		}
		var b []byte
		b = appendMsg(b, &pgproto3.AuthenticationOk{})
		for _, p := range [][2]string{
			{"server_version", "15.0 (pgnotify bench fake)"},
			{"server_encoding", "UTF8"},
			{"client_encoding", "UTF8"},
			{"DateStyle", "ISO, MDY"},
			{"integer_datetimes", "on"},
			{"standard_conforming_strings", "on"},
			{"TimeZone", "UTC"},
			{"in_hot_standby", "off"},
			{"default_transaction_read_only", "off"},
		} {
			b = appendMsg(b, &pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
		}
		b = appendMsg(b, &pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: []byte{0, 0, 0, 1}})
		b = appendMsg(b, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		return c.write(b)
	}
}

// answer returns the encoded reply to a simple query, ReadyForQuery
// included. Statements are split at semicolons (no bench query quotes one).
func (c *fakeConn) answer(sql string) []byte {
	var b []byte
	any := false
	for _, stmt := range strings.Split(sql, ";") {
		stmt = stripComments(stmt)
		if stmt == "" {
			continue
		}
		any = true
		up := strings.ToUpper(stmt)
		switch {
		case strings.HasPrefix(up, "LISTEN "):
			ch := unquoteIdent(strings.TrimSpace(stmt[len("LISTEN "):]))
			c.mu.Lock()
			c.chns[ch] = struct{}{}
			c.mu.Unlock()
			b = appendMsg(b, &pgproto3.CommandComplete{CommandTag: []byte("LISTEN")})
		case strings.HasPrefix(up, "UNLISTEN "):
			ch := strings.TrimSpace(stmt[len("UNLISTEN "):])
			c.mu.Lock()
			if ch == "*" {
				clear(c.chns)
			} else {
				delete(c.chns, unquoteIdent(ch))
			}
			c.mu.Unlock()
			b = appendMsg(b, &pgproto3.CommandComplete{CommandTag: []byte("UNLISTEN")})
		case strings.Contains(up, "PG_LISTENING_CHANNELS()"):
			c.mu.Lock()
			rows := make([]string, 0, len(c.chns))
			for ch := range c.chns {
				rows = append(rows, ch)
			}
			c.mu.Unlock()
			b = appendMsg(b, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
				Name: []byte("pg_listening_channels"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1,
			}}})
			for _, r := range rows {
				b = appendMsg(b, &pgproto3.DataRow{Values: [][]byte{[]byte(r)}})
			}
			b = appendMsg(b, &pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(len(rows)))})
		case strings.HasPrefix(up, "SELECT PG_"):
			// pgnotify's session and health queries: SELECT pg_backend_pid(),
			// pg_is_in_recovery(), pg_notification_queue_usage(), one row.
			var fields []pgproto3.FieldDescription
			var values [][]byte
			for _, expr := range strings.Split(stmt[len("SELECT "):], ",") {
				expr = strings.TrimSpace(expr)
				v := "0"
				switch expr {
				case "pg_backend_pid()":
					v = strconv.FormatUint(uint64(c.pid), 10)
				case "pg_is_in_recovery()":
					v = "f"
				}
				fields = append(fields, pgproto3.FieldDescription{Name: []byte(strings.TrimSuffix(expr, "()")),
					DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
				values = append(values, []byte(v))
			}
			b = appendMsg(b, &pgproto3.RowDescription{Fields: fields})
			b = appendMsg(b, &pgproto3.DataRow{Values: values})
			b = appendMsg(b, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		default:
			b = appendMsg(b, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000",
				Message: "the bench fake server does not run: " + stmt})
			b = appendMsg(b, &pgproto3.ReadyForQuery{TxStatus: 'I'})
			return b
		}
	}
	if !any {
		b = appendMsg(b, &pgproto3.EmptyQueryResponse{})
	}
	return appendMsg(b, &pgproto3.ReadyForQuery{TxStatus: 'I'})
}

// stripComments drops "--" comments and surrounding space.
func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		out = append(out, line)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// unquoteIdent undoes quoteIdent, or folds an unquoted name to lower case.
func unquoteIdent(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s)
}

func appendMsg(b []byte, m pgproto3.BackendMessage) []byte {
	b, err := m.Encode(b)
	if err != nil {
		panic(err)
	}
	return b
}

// write sends whole messages, never interleaved with another writer's.
func (c *fakeConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// streamChunk is how many notifications one write carries.
const streamChunk = 1024

// stream writes n notifications on channel from a pre-encoded buffer.
func (c *fakeConn) stream(channel string, n int) {
	payload := strings.Repeat("x", payloadLen)
	msg := appendMsg(nil, &pgproto3.NotificationResponse{PID: c.pid, Channel: channel, Payload: payload})
	buf := make([]byte, 0, len(msg)*streamChunk)
	for range streamChunk {
		buf = append(buf, msg...)
	}
	for n > 0 {
		k := min(n, streamChunk)
		if c.write(buf[:k*len(msg)]) != nil {
			return
		}
		n -= k
	}
}

// streamRR writes n notifications round-robin over the channels
// PREFIX_0 .. PREFIX_{c-1}, one round of c pre-encoded messages at a time
// (n is a multiple of c).
func (c *fakeConn) streamRR(prefix string, channels, n int) {
	payload := strings.Repeat("x", payloadLen)
	var round []byte
	for i := range channels {
		round = appendMsg(round, &pgproto3.NotificationResponse{PID: c.pid, Channel: prefix + "_" + strconv.Itoa(i), Payload: payload})
	}
	for range n / channels {
		if c.write(round) != nil {
			return
		}
	}
}

// paced sends n notifications at perSec, round-robin over cs, each payload
// starting with its send time in Unix nanoseconds.
func paced(channel string, cs []*fakeConn, n int, perSec float64) {
	if len(cs) == 0 {
		return
	}
	interval := time.Duration(float64(time.Second) / perSec)
	start := time.Now()
	var b []byte
	pad := strings.Repeat("x", payloadLen-20)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		c := cs[i%len(cs)]
		payload := fmt.Sprintf("%019d %s", time.Now().UnixNano(), pad)
		b = appendMsg(b[:0], &pgproto3.NotificationResponse{PID: c.pid, Channel: channel, Payload: payload})
		c.write(b)
	}
}

// fakeProc is the parent's handle on a fake-server child process.
type fakeProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string
	mu   sync.Mutex
}

// startFake re-executes this binary as a fake server and waits for its
// address.
func startFake() (*fakeProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, fakeServerCmd)
	cmd.Stderr = os.Stderr
	// One P is plenty to write pre-encoded buffers, and it leaves the
	// client's scheduling less disturbed on a small machine.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &fakeProc{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	line, err := p.out.ReadString('\n')
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("fake server: %w", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if !ok {
		p.stop()
		return nil, fmt.Errorf("fake server: unexpected %q", line)
	}
	p.addr = addr
	return p, nil
}

// connString returns a connection string for pgx and lib/pq.
func (p *fakeProc) connString() string {
	return "postgres://bench@" + p.addr + "/bench?sslmode=disable"
}

// command sends one command and returns the number of connections in its
// "ok N" answer.
func (p *fakeProc) command(format string, args ...any) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintf(p.in, format+"\n", args...); err != nil {
		return 0, err
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, ok := strings.CutPrefix(strings.TrimSpace(line), "ok ")
	if !ok {
		return 0, fmt.Errorf("fake server: %s", strings.TrimSpace(line))
	}
	return strconv.Atoi(n)
}

// stop ends the child.
func (p *fakeProc) stop() {
	fmt.Fprintln(p.in, "quit")
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// stampNanos parses the send time a paced payload starts with; 0 if none.
func stampNanos(payload string) int64 {
	if len(payload) < 19 {
		return 0
	}
	var v int64
	for i := range 19 {
		d := payload[i] - '0'
		if d > 9 {
			return 0
		}
		v = v*10 + int64(d)
	}
	return v
}
