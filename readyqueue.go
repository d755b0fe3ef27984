package pgnotify

// This file holds the ready queue, through which waiters hand what they
// read to the consumer, and the consumer's side of it: taking batches and
// Dead events. The queue and everything here is guarded by Manager.mu.

// entry is one item of the ready queue: a member with something for the
// consumer, or an event made in advance (Recovered).
type entry struct {
	w  *member // the internal tests build entries by this name
	ev *Event
}

// fifo is the ready queue: members in the order they became ready, so one
// busy connection cannot starve the others.
type fifo struct {
	items []entry
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(e entry) {
	if q.head > 0 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, e)
}

func (q *fifo) pop() (entry, bool) {
	if q.head == len(q.items) {
		return entry{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = entry{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return e, true
}

// pushReady puts mb at the back of the ready queue and, if wake is set,
// wakes the consumer.
func (m *Manager) pushReady(mb *member, wake bool) {
	m.mu.Lock()
	m.ready.push(entry{w: mb})
	m.mu.Unlock()
	if wake {
		m.wakeConsumer()
	}
}

func (m *Manager) wakeConsumer() {
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// popLocked takes the next event from the ready queue. A member with more
// than one batch goes to the back, behind the others. Must be called with
// m.mu held.
func (m *Manager) popLocked() (Event, bool) {
	for {
		e, ok := m.ready.pop()
		if !ok {
			return Event{}, false
		}
		if e.ev != nil {
			return *e.ev, true
		}
		evs, more := m.takeLocked(e.w, m.popped[:0], false)
		if more {
			m.ready.push(e)
		}
		if len(evs) > 0 {
			ev := evs[0]
			m.popped[0] = Event{}
			return ev, true
		}
	}
}

// collectLocked takes every event in the ready queue now, for a drain pass:
// each member's whole pending set, in batches of at most the bound, then
// its Dead event. Members become ready again with what arrives later, which
// belongs to the next pass. Must be called with m.mu held.
func (m *Manager) collectLocked() []Event {
	var evs []Event
	for {
		e, ok := m.ready.pop()
		if !ok {
			return evs
		}
		if e.ev != nil {
			evs = append(evs, *e.ev)
			continue
		}
		evs, _ = m.takeLocked(e.w, evs, true)
	}
}

// takeLocked appends to evs what the consumer takes from mb, just popped
// from the ready queue: one batch, or with all every pending notification
// in batches; then, once mb has nothing left and is dead, its Dead event. It
// reports whether mb has more to yield, and so goes back in the queue. Must
// be called with m.mu held.
func (m *Manager) takeLocked(mb *member, evs []Event, all bool) ([]Event, bool) {
	mb.mu.Lock()
	ns, size := mb.pending, mb.pendingBytes
	if !all && len(ns) > 0 {
		k, kb := m.cut(ns, size)
		ns, size = ns[:k], kb
	}
	if len(ns) == len(mb.pending) {
		mb.pending = nil
	} else {
		mb.pending = mb.pending[len(ns):]
	}
	mb.pendingBytes -= size
	dead := mb.state == stateDead
	// A dead member's Dead event comes after its last batch, behind the
	// other members when that batch is yielded on its own.
	more := len(mb.pending) > 0 || (dead && len(ns) > 0 && !all)
	mb.queued = more
	mb.mu.Unlock()
	if len(ns) > 0 {
		mb.roomFreed()
	}
	if !more {
		m.ms.dropRemoved(mb)
	}
	for len(ns) > 0 {
		k, kb := m.cut(ns, size)
		// The caller owns the batch: cap it so that an append to it can't
		// write over what the waiter appends to pending.
		evs = append(evs, Event{Kind: Batch, Conn: mb.conn, Notifications: ns[:k:k]})
		ns, size = ns[k:], size-kb
		m.stats.batches.Add(1)
		m.stats.notifications.Add(uint64(k))
	}
	if dead && !more {
		evs = append(evs, m.buryLocked(mb))
	}
	return evs, more
}

// cut returns how many of ns, whose size is size, make the next batch, and
// their size: at most the pending bound in number and in bytes, and at
// least one.
func (m *Manager) cut(ns []*Notification, size int) (k, kb int) {
	k = min(len(ns), m.cfg.maxPending)
	if k == len(ns) && size <= m.cfg.maxBytes {
		return k, size
	}
	for i, x := range ns[:k] {
		s := sizeOfOne(x)
		if i > 0 && kb+s > m.cfg.maxBytes {
			return i, kb
		}
		kb += s
	}
	return k, kb
}
