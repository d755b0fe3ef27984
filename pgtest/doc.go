// Package pgtest lets a test of code that listens on PostgreSQL run against a
// real server and break its connections on purpose: [Start] runs a throwaway
// server for one test, and a [Proxy] between a client and that server can
// [Proxy.Cut] every connection or [Proxy.Blackhole] them, as a network does.
//
//	func TestListener(t *testing.T) {
//		url := pgtest.Start(t) // stopped when the test ends
//		p := pgtest.NewProxy(t, url)
//		conn, err := pgx.Connect(ctx, p.ConnString())
//		...
//		p.Cut() // conn's next read fails: does the listener come back?
//	}
//
// The server comes from the PostgreSQL binaries installed on the machine
// (initdb and pg_ctl, on PATH or under /usr/lib/postgresql/*/bin); nothing is
// downloaded and no container runtime is needed. A machine without them fails
// the test with what to install: a test that cannot reach a server proves
// nothing, so pgtest never skips.
//
// pgtest uses nothing of package pgnotify: it serves a test of pgx code as
// well. It is how pgnotify tests itself (on internal/pgtmp and
// internal/faultproxy, which it wraps).
package pgtest
