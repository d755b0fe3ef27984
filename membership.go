package pgnotify

import (
	"slices"

	"github.com/jackc/pgx/v5"
)

// This file draws the Manager's membership, as member.go draws one
// member's life: where each connection stands in the Manager, the
// collections that say so, and every transition between them. All of it is
// guarded by Manager.mu; nothing else writes these collections.
//
// Where a connection stands (a garbage entry may also be claimed for
// recovery; anything else is in one place at a time):
//
//	        reserve (Add, a recovery's dial)       admit
//	(none) ─────────────────────────────► adding ─────────► members
//	  ▲ ◄──────────── unreserve ────────────┘              │  │  │
//	  │                                                    │  │  │ Add again of a removed
//	  │            forget: its waiter returned (Remove)    │  │  │ conn: carryOver takes
//	  │    ┌───────────────────────────────────────────────┘  │  │ its pending along
//	  │    ▼                                                  │  ▼
//	  ├── removed (notifications still owed;                  │ bury: Next yields
//	  │   dropRemoved once all are taken)                     │ its Dead event
//	  │                                                       ▼
//	  ├──────────────── takeGarbage ──────────────────── garbage ◄─ release ─┐
//	  │                                                       │              │ (failed)
//	  │                                                       └─ claim ──► recovering
//	  └──────────── replace: the replacement is admitted in its place ───────┘
//
// Closed is one thing: the Manager's ctx, cancelled by Close while it holds
// Manager.mu, so that a check under Manager.mu (closedLocked) is ordered
// with every transition; m.ctx.Done() is the same thing for a select.
// "Made by NewManager" is one check too: made.
type membership struct {
	// adding holds connections an Add (or a recovery's dial) has
	// reserved: nobody else may add them, and nobody touches them but
	// the reserver.
	adding map[*pgx.Conn]struct{}
	// members are the live and stopping members, and dead ones whose Dead
	// event is not yet yielded.
	members map[*pgx.Conn]*member
	// removed holds removed members whose pending notifications are not
	// all yielded yet: adding the connection again carries them over, so
	// they come before what it receives next.
	removed map[*pgx.Conn]*member
	// garbage are the dead, their Dead event yielded, in order of death.
	garbage []Garbage
	// recovering holds garbage connections a Recover or WithReconnect is
	// replacing; they count as members for io.EOF.
	recovering map[*pgx.Conn]struct{}
	seq        uint64 // the last member's order of Add, for Conns
}

func newMembership() membership {
	return membership{
		adding:     make(map[*pgx.Conn]struct{}),
		members:    make(map[*pgx.Conn]*member),
		removed:    make(map[*pgx.Conn]*member),
		recovering: make(map[*pgx.Conn]struct{}),
	}
}

// made returns errNotNew for a Manager not made by NewManager (whose
// signal is the one field every made Manager has), or nil.
func (m *Manager) made() error {
	if m.signal == nil {
		return errNotNew
	}
	return nil
}

// closedLocked reports whether Close was called. Must be called with m.mu
// held.
func (m *Manager) closedLocked() bool { return m.ctx.Err() != nil }

// checkOpen returns why the manager can take no request (not made by
// NewManager, or closed), or nil.
func (m *Manager) checkOpen() error {
	if err := m.made(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked() {
		return ErrClosed
	}
	return nil
}

// reserve: (none) → adding, for each of conns, all or none. It fails for a
// nil connection, a member, one reserved already or named twice.
func (ms *membership) reserve(conns []*pgx.Conn, op string) error {
	for i, c := range conns {
		if c == nil {
			return &connError{op, nth(i), errNilConn}
		}
		_, member := ms.members[c]
		_, adding := ms.adding[c]
		if member || adding || slices.Contains(conns[:i], c) {
			return &connError{op, nth(i), ErrAlreadyAdded}
		}
	}
	for _, c := range conns {
		ms.adding[c] = struct{}{}
	}
	return nil
}

// unreserve: adding → (none).
func (ms *membership) unreserve(conns []*pgx.Conn) {
	for _, c := range conns {
		delete(ms.adding, c)
	}
}

// admit: adding → members, in one step (released any later, the
// reservation could be another Add's by then).
func (ms *membership) admit(mb *member) {
	delete(ms.adding, mb.conn)
	ms.seq++
	mb.seq = ms.seq
	ms.members[mb.conn] = mb
}

// carryOver: removed → (none) as mb, reserved for the same connection,
// takes over what the removed member still owed: it comes first. The old
// member's entry in the ready queue then yields nothing.
func (ms *membership) carryOver(mb *member) {
	old := ms.removed[mb.conn]
	if old == nil {
		return
	}
	delete(ms.removed, mb.conn)
	old.mu.Lock()
	mb.pending = slices.Concat(old.pending, mb.pending)
	mb.pendingBytes += old.pendingBytes
	old.pending, old.pendingBytes = nil, 0
	old.mu.Unlock()
}

// forget: members → removed, or → (none) when mb owes nothing: mb's waiter
// returned and handed the connection back.
func (ms *membership) forget(mb *member) {
	if ms.members[mb.conn] == mb {
		delete(ms.members, mb.conn)
	}
	mb.mu.Lock()
	owes := len(mb.pending) > 0
	mb.mu.Unlock()
	if owes {
		ms.removed[mb.conn] = mb
	}
}

// dropRemoved: removed → (none), once everything mb owed is taken.
func (ms *membership) dropRemoved(mb *member) {
	if ms.removed[mb.conn] == mb {
		delete(ms.removed, mb.conn)
	}
}

// bury: members → garbage as g, when Next yields mb's Dead event.
func (ms *membership) bury(mb *member, g Garbage) {
	if ms.members[mb.conn] == mb {
		delete(ms.members, mb.conn)
	}
	ms.garbage = append(ms.garbage, g)
}

// claim: garbage → garbage + recovering, for conn. It reports false if
// another recovery has it already.
func (ms *membership) claim(conn *pgx.Conn) bool {
	if _, busy := ms.recovering[conn]; busy {
		return false
	}
	ms.recovering[conn] = struct{}{}
	return true
}

// release: recovering → garbage, after a failed recovery (or → (none) if
// it was taken meanwhile).
func (ms *membership) release(conn *pgx.Conn) {
	delete(ms.recovering, conn)
}

// inGarbage returns conn's garbage entry, if it is there.
func (ms *membership) inGarbage(conn *pgx.Conn) (Garbage, bool) {
	i := slices.IndexFunc(ms.garbage, func(g Garbage) bool { return g.Conn == conn })
	if i < 0 {
		return Garbage{}, false
	}
	return ms.garbage[i], true
}

// replace: garbage + recovering → (none) for dead, whose replacement the
// caller admits next. It reports false if dead was taken meanwhile.
func (ms *membership) replace(dead *pgx.Conn) bool {
	if _, ok := ms.inGarbage(dead); !ok {
		return false
	}
	delete(ms.recovering, dead)
	ms.garbage = slices.DeleteFunc(ms.garbage, func(g Garbage) bool { return g.Conn == dead })
	return true
}

// takeGarbage: garbage → (none), all of it, for TakeGarbage. A reconnect
// in progress gives up at its next step; until then the taken connections
// no longer keep the set from being empty.
func (ms *membership) takeGarbage() []Garbage {
	g := ms.garbage
	ms.garbage = nil
	for _, x := range g {
		delete(ms.recovering, x.Conn)
	}
	return g
}

// list returns the members, with the removed ones that still owe
// notifications when removed is true.
func (ms *membership) list(removed bool) []*member {
	n := len(ms.members)
	if removed {
		n += len(ms.removed)
	}
	mbs := make([]*member, 0, n)
	for _, mb := range ms.members {
		mbs = append(mbs, mb)
	}
	if removed {
		for _, mb := range ms.removed {
			mbs = append(mbs, mb)
		}
	}
	return mbs
}

// empty reports whether no connection is a member or being recovered.
func (ms *membership) empty() bool {
	return len(ms.members) == 0 && len(ms.recovering) == 0
}
