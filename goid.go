package pgnotify

import (
	"bytes"
	"runtime"
)

// goid returns the calling goroutine's id, read from its stack header.
//
// It tells a request made from inside a Do function on the member lent to
// it (which would wait for that function, so for itself, forever: lookup
// refuses it, and Close does not wait for it) from the same request made by
// another goroutine (which waits its turn, as Do promises). No cleaner way
// exists: pgx refuses re-entry by the connection's state, but here the
// state is the same for both callers, fn receives only the *pgx.Conn, and
// the ctx a caller passes inside fn is its own, so nothing but the
// goroutine tells them apart. It costs a stack header read, once per Do and
// Close, and per request only while a member is lent.
func goid() uint64 {
	var buf [64]byte
	b := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	var id uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
