package bus

// This file holds the channel index: for each channel, the subscriptions
// that want it and whether the connection listens on it. It is guarded by
// Bus.mu; the sync goroutine reads the dirty set to know what to LISTEN
// and UNLISTEN.

// chanEntry is one channel of the index. Guarded by Bus.mu.
type chanEntry struct {
	subs     []subRef
	listened bool  // LISTEN done on the current connection
	inflight bool  // a LISTEN or UNLISTEN of it is on the wire
	err      error // the server refused to LISTEN it; waiting Subscribes fail
}

// subRef is a subscription in a channel entry: s.channels[i] is the channel.
type subRef struct {
	s *Subscription
	i int
}

// addLocked puts channel i of s, ch, in the index and reports whether ch
// is dirty. Must be called with b.mu held.
func (b *Bus) addLocked(s *Subscription, i int, ch string) bool {
	e := b.chans[ch]
	if e == nil {
		e = &chanEntry{}
		b.chans[ch] = e
	}
	s.pos[i] = len(e.subs)
	e.subs = append(e.subs, subRef{s: s, i: i})
	return b.markLocked(ch, e)
}

// removeLocked takes s out of the index and reports whether a channel lost
// its last subscription and must be UNLISTENed. Must be called with b.mu
// held.
func (b *Bus) removeLocked(s *Subscription) (unlisten bool) {
	s.removed = true
	delete(b.subs, s)
	for i, ch := range s.channels {
		e := b.chans[ch]
		p, last := s.pos[i], len(e.subs)-1
		moved := e.subs[last]
		e.subs[p] = moved
		moved.s.pos[moved.i] = p
		e.subs[last] = subRef{}
		e.subs = e.subs[:last]
		if len(e.subs) == 0 && cap(e.subs) > 64 {
			e.subs = nil
		}
		unlisten = b.markLocked(ch, e) || unlisten
	}
	return unlisten
}

// markLocked records whether ch needs a LISTEN or UNLISTEN, drops an entry
// nobody wants or listens, and reports whether ch is dirty. Must be called
// with b.mu held.
func (b *Bus) markLocked(ch string, e *chanEntry) bool {
	wanted := len(e.subs) > 0
	if !wanted && !e.listened && !e.inflight {
		delete(b.chans, ch)
		delete(b.dirty, ch)
		return false
	}
	if wanted != e.listened {
		b.dirty[ch] = struct{}{}
		return true
	}
	delete(b.dirty, ch)
	return false
}
