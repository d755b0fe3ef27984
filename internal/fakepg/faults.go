package fakepg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Errors from the injection methods of [Conn].
var (
	// ErrConnClosed: the session has ended, or SendFatal already ended it.
	ErrConnClosed = errors.New("fakepg: connection closed")
	// ErrSilenced: Silence was called; the session sends nothing more.
	ErrSilenced = errors.New("fakepg: connection silenced")
	// ErrStalled: a frame is half-sent (SendHalfThenStall); anything sent
	// now would corrupt it. Call ResumeStalled first.
	ErrStalled = errors.New("fakepg: a frame is stalled half-sent")
	// ErrNotStalled: ResumeStalled was called with no frame stalled.
	ErrNotStalled = errors.New("fakepg: no frame is stalled")
)

// Frames that pgx's frontend rejects.
const (
	// malformedType is a message type byte no backend message uses:
	// pgproto3's Frontend.Receive fails with "unknown message type: !".
	malformedType = '!'
	// oversizedLen is the length of the header SendOversized sends, far
	// above pgproto3's limit for a message body (0x3fffffff-1 bytes, the
	// server's PG_LARGE_MESSAGE_LIMIT).
	oversizedLen = 0x7fffffff
	// notifyChunk is how many bytes of notifications NotifyN writes at once.
	notifyChunk = 64 << 10
)

// writableLocked reports why an injection cannot be written now, or nil.
// MUST be called with c.wmu held.
func (c *Conn) writableLocked() error {
	switch {
	case c.ended.Load() || c.fatal.Load():
		return ErrConnClosed
	case c.stalled != nil:
		return ErrStalled
	case c.silenced.Load():
		return ErrSilenced
	}
	return nil
}

// write sends p, whole, between two answers of the serve goroutine.
func (c *Conn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writableLocked(); err != nil {
		return err
	}
	if _, err := c.nc.Write(p); err != nil {
		return fmt.Errorf("fakepg: write: %w", err)
	}
	return nil
}

// Send writes msgs to the client in one write, between two answers of the
// server's goroutine (never inside one). It blocks while the client's socket
// buffer is full. It fails with [ErrConnClosed], [ErrStalled] or
// [ErrSilenced] when the session cannot send.
func (c *Conn) Send(msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return fmt.Errorf("fakepg: encode %T: %w", m, err)
		}
	}
	return c.write(buf)
}

// Notify sends one NotificationResponse from [NotifierPID], whether or not
// the session listens on channel (a real server would only send it if it
// did; the client cannot tell). Errors are as for [Conn.Send].
func (c *Conn) Notify(channel, payload string) error {
	return c.Send(&pgproto3.NotificationResponse{PID: NotifierPID, Channel: channel, Payload: payload})
}

// NotifyN sends n notifications on channel from [NotifierPID], with
// payload(i) as the i-th payload (i from 0; nil means empty payloads),
// in order. They are written in chunks of about 64 KiB, so the server's
// answers may come between chunks but never inside one. NotifyN blocks while
// the client is not reading; it returns the first error, after which some of
// the notifications may have been sent.
func (c *Conn) NotifyN(channel string, n int, payload func(i int) string) error {
	buf := make([]byte, 0, notifyChunk+1024)
	msg := pgproto3.NotificationResponse{PID: NotifierPID, Channel: channel}
	for i := range n {
		if payload != nil {
			msg.Payload = payload(i)
		}
		var err error
		if buf, err = msg.Encode(buf); err != nil {
			return fmt.Errorf("fakepg: encode notification %d: %w", i, err)
		}
		if len(buf) >= notifyChunk {
			if err := c.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		return c.write(buf)
	}
	return nil
}

// SendMalformed sends a complete frame with a message type byte that no
// backend message has ('!', empty body). pgx's frontend fails the read with
// "unknown message type: !" and closes the connection.
func (c *Conn) SendMalformed() error {
	frame := []byte{malformedType, 0, 0, 0, 4}
	return c.write(frame)
}

// SendOversized sends the 5-byte header of a NotificationResponse claiming
// a length of 0x7fffffff bytes, and no body. pgx's frontend rejects the
// header at once with a *pgproto3.ExceededMaxBodyLenErr and closes the
// connection; it never tries to allocate or read the body.
func (c *Conn) SendOversized() error {
	frame := []byte{'A', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(frame[1:], oversizedLen)
	return c.write(frame)
}

// SendHalfThenStall sends the first half (rounded down) of a valid
// NotificationResponse from [NotifierPID] and then nothing: the connection
// stays open and the session goes on reading queries, but their answers wait
// until [Conn.ResumeStalled] sends the rest of the frame (anything written
// before would land inside it). Injections meanwhile fail with [ErrStalled].
// A frame's first half always holds its 5-byte header, so the client has
// started reading the message.
func (c *Conn) SendHalfThenStall(channel, payload string) error {
	frame, err := (&pgproto3.NotificationResponse{PID: NotifierPID, Channel: channel, Payload: payload}).Encode(nil)
	if err != nil {
		return fmt.Errorf("fakepg: encode notification: %w", err)
	}
	half := len(frame) / 2
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writableLocked(); err != nil {
		return err
	}
	if _, err := c.nc.Write(frame[:half]); err != nil {
		return fmt.Errorf("fakepg: write: %w", err)
	}
	c.stalled = frame[half:]
	return nil
}

// ResumeStalled sends the rest of the frame SendHalfThenStall cut, then
// lets the answers held back meanwhile go. It fails with [ErrNotStalled] if
// no frame is stalled and [ErrConnClosed] if the session has ended. It
// sends even on a silenced session: the frame was begun before.
func (c *Conn) ResumeStalled() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.ended.Load() || c.fatal.Load():
		return ErrConnClosed
	case c.stalled == nil:
		return ErrNotStalled
	}
	rest := c.stalled
	c.stalled = nil
	c.wcond.Broadcast()
	if _, err := c.nc.Write(rest); err != nil {
		return fmt.Errorf("fakepg: write: %w", err)
	}
	return nil
}

// SendFatal sends an ErrorResponse with severity FATAL, SQLSTATE code and
// message msg, then ends the session the way a terminating backend does:
// the write side is shut (the client reads the error, then EOF), the
// session reads and discards until the client closes its side, then closes.
// pgx returns the error as a *pgconn.PgError with that code and closes the
// connection. Use code "57P01" for an administrator's pg_terminate_backend
// or a shutdown.
func (c *Conn) SendFatal(code, msg string) error {
	frame, err := errorResponse("FATAL", code, msg).Encode(nil)
	if err != nil {
		return fmt.Errorf("fakepg: encode error: %w", err)
	}
	c.wmu.Lock()
	if err := c.writableLocked(); err != nil {
		c.wmu.Unlock()
		return err
	}
	_, err = c.nc.Write(frame)
	if err == nil {
		c.fatal.Store(true)
		if tc, ok := c.nc.(*net.TCPConn); ok {
			// The client may have read the frame, hung up, and made the
			// session close the socket already: the fault is delivered.
			if err = tc.CloseWrite(); errors.Is(err, net.ErrClosed) {
				err = nil
			}
		}
	}
	c.wmu.Unlock()
	if err != nil {
		c.end(false)
		return fmt.Errorf("fakepg: write: %w", err)
	}
	return nil
}

// CloseAbrupt closes the socket at once with no message, with an RST (linger
// 0) rather than a FIN: the client's next read fails with "connection reset
// by peer". It fails with [ErrConnClosed] if the session had already ended.
func (c *Conn) CloseAbrupt() error {
	if !c.end(true) {
		return ErrConnClosed
	}
	return nil
}

// Silence makes the session a silent peer, as if the server had vanished
// with the connection half-open: from now on it reads and discards what the
// client sends and answers nothing (pings included), and injections fail
// with [ErrSilenced]. An answer already being written still completes. A
// Terminate from the client still closes the session, so that pgx's
// background close, which waits for the server to close the socket, ends
// promptly; for a peer that never even closes, use faultproxy's Blackhole.
func (c *Conn) Silence() { c.silenced.Store(true) }
