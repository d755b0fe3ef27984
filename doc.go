// Package pgnotify is PostgreSQL LISTEN/NOTIFY for pgx v5.
package pgnotify
