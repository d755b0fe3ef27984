package durable

import (
	"slices"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/seed-c59d106d/pgnotify"
)

// ackDelay is how long the stream gathers acknowledgements before it sends
// them to the server: one status update per ackDelay however fast the
// consumer goes, and an acknowledged batch is known to the server within
// about ackDelay, so a crash soon after brings back little handled work.
const ackDelay = 20 * time.Millisecond

// handed is a batch Next returned and the slot has not yet passed.
type handed struct {
	lsn  uint64        // Event.LSN
	end  pglogrepl.LSN // the end of its transaction: confirmed once it and all before are done
	skip pglogrepl.LSN // a later position (skipped transactions, keepalives) confirmed along with it
	done bool          // acknowledged
}

// Ack acknowledges the batch whose Event.LSN is lsn, on a stream opened
// [WithManualAck]: the consumer has handled it, and the server may forget it
// once every batch handed out before it is acknowledged too. Batches may be
// acknowledged in any order and from any goroutine; the slot advances to the
// end of the longest run of acknowledged batches from the oldest one handed
// out, and a crash brings back every batch after that run, acknowledged or
// not. The acknowledgement reaches the server within about 20 ms (several are
// sent together) and before [Stream.Close] returns.
//
// Acknowledging a batch again, or one the slot has already passed, does
// nothing. Ack returns an error for an LSN this stream has not handed out, on
// a stream without WithManualAck (there Next acknowledges), and
// [pgnotify.ErrClosed] after Close.
func (s *Stream) Ack(lsn uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return pgnotify.ErrClosed
	case !s.cfg.manualAck:
		return errAckNeedsManual
	}
	i, found := slices.BinarySearchFunc(s.out, lsn, func(h handed, lsn uint64) int {
		switch {
		case h.lsn < lsn:
			return -1
		case h.lsn > lsn:
			return 1
		}
		return 0
	})
	if !found {
		if lsn != 0 && lsn <= s.passed {
			return nil
		}
		return &ackError{lsn: lsn}
	}
	s.out[i].done = true
	s.advance()
	return nil
}

// hand records that Next returns the batch it: it stays outstanding until
// acknowledged. It must be called with s.mu held.
func (s *Stream) hand(it *item) {
	s.out = append(s.out, handed{lsn: it.ev.LSN, end: it.end, skip: it.skip})
}

// ackAll acknowledges every batch handed out: without manual acknowledgement,
// the consumer asking for the next batch (or closing) is done with the last.
// It must be called with s.mu held.
func (s *Stream) ackAll() {
	for i := range s.out {
		s.out[i].done = true
	}
	s.advance()
}

// advance moves the acknowledged position past the acknowledged batches at
// the front of s.out, and schedules sending it. It must be called with s.mu
// held.
func (s *Stream) advance() {
	n := 0
	before := s.acked
	for _, h := range s.out {
		if !h.done {
			break
		}
		s.acked = max(s.acked, h.end, h.skip)
		s.passed = h.lsn
		n++
	}
	if n == 0 {
		return
	}
	// Shift rather than reslice, so that the array's space is reused.
	s.out = s.out[:copy(s.out, s.out[n:])]
	if s.acked > before && !s.ackScheduled && !s.closed {
		s.ackScheduled = true
		if s.ackTimer == nil {
			s.ackTimer = time.AfterFunc(ackDelay, s.kickAck)
		} else {
			s.ackTimer.Reset(ackDelay)
		}
	}
}

// skipAfter makes pos confirmed along with the last batch handed out, or at
// once if none is outstanding. It must be called with s.mu held.
func (s *Stream) skipAfter(pos pglogrepl.LSN) {
	if n := len(s.out); n > 0 {
		s.out[n-1].skip = max(s.out[n-1].skip, pos)
		return
	}
	s.acked = max(s.acked, pos)
}

// kickAck runs ackDelay after an acknowledgement: it makes the receiver send
// the acknowledged position now, interrupting its read if it is blocked in
// one. The receiver checks ackDue after setting its own read deadline, so a
// kick is never lost between the two.
func (s *Stream) kickAck() {
	s.ackDue.Store(true)
	signal(s.ackWake)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ackScheduled = false
	if s.nc != nil {
		_ = s.nc.SetReadDeadline(time.Now())
	}
}
