package natsbridge

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with [errors.Is]; the errors natsbridge
// returns wrap them with the detail.
var (
	// ErrSubject is returned, before anything is published, for a channel or
	// prefix that NATS subjects cannot carry: whitespace, '*', '>', an empty
	// token (a leading, trailing or doubled '.'), or a channel named like
	// the events subject's last token ("_events").
	ErrSubject = errors.New("natsbridge: channel not usable in a NATS subject")

	// ErrUnpublished is returned by [Durable] when it stops while JetStream
	// has not acknowledged every message of the batch it holds: closing the
	// stream leaves that batch unacknowledged on the slot. See [Durable].
	ErrUnpublished = errors.New("natsbridge: batch not acknowledged by JetStream")

	// ErrNeedsManualAck is returned by [Durable] for a stream not opened
	// [durable.WithManualAck]: its Next would acknowledge a batch on the
	// slot before JetStream has, and a cancel could lose it.
	ErrNeedsManualAck = errors.New("natsbridge: Durable needs a stream opened with durable.WithManualAck()")
)

// subjectError names the channel (or prefix) and says what is wrong with it.
type subjectError struct {
	what, name, why string
}

func (e *subjectError) Error() string {
	return fmt.Sprintf("natsbridge: %s %q cannot be a NATS subject token (%s): rename it, or bridge other channels", e.what, e.name, e.why)
}

func (e *subjectError) Unwrap() error { return ErrSubject }

// unpublishedError says which batch JetStream did not acknowledge, and why.
type unpublishedError struct {
	lsn string
	err error
}

func (e *unpublishedError) Error() string {
	return fmt.Sprintf("natsbridge: the batch at LSN %s was not acknowledged by JetStream: %v; "+
		"closing the stream acknowledges it on the slot, so end the process without Close to get it again", e.lsn, e.err)
}

func (e *unpublishedError) Unwrap() []error { return []error{ErrUnpublished, e.err} }
