package fakepg

import (
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Type OIDs of the columns the fake returns.
const (
	int4OID = 23
	textOID = 25
)

// sqlError is a statement the fake refuses, sent as an ErrorResponse.
type sqlError struct{ code, msg string }

// queryTx is what one simple query changes, applied only if every statement
// succeeds: the server runs a multi-statement query as one implicit
// transaction, and pgnotify's Listen counts on that.
type queryTx struct {
	channels []string                        // the session's channels as they will be
	notifies []pgproto3.NotificationResponse // NOTIFYs to deliver at commit
}

// answerQuery answers one simple query, on the serve goroutine: the hook
// first, then one result per statement, then ReadyForQuery. The answers are
// buffered in c.be; the serve loop flushes them.
func (c *Conn) answerQuery(sql string) {
	c.mu.Lock()
	hook := c.onQuery
	tx := queryTx{channels: slices.Clone(c.channels)}
	c.mu.Unlock()
	if hook != nil && hook(sql) {
		return
	}

	stmts := splitStatements(sql)
	if len(stmts) == 0 {
		c.be.Send(&pgproto3.EmptyQueryResponse{})
		c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return
	}
	for _, stmt := range stmts {
		if err := c.execStatement(stmt, &tx); err != nil {
			c.be.Send(errorResponse("ERROR", err.code, err.msg))
			c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			return
		}
	}

	c.mu.Lock()
	c.channels = tx.channels
	c.mu.Unlock()
	for i := range tx.notifies {
		c.deliver(&tx.notifies[i], tx.channels)
	}
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

// execStatement sends the result of one statement (without comments or
// surrounding blanks) and stages its effects in tx.
func (c *Conn) execStatement(stmt string, tx *queryTx) *sqlError {
	kw, rest := keyword(stmt)
	switch {
	case strings.Contains(strings.ToLower(stmt), "pg_listening_channels"):
		c.be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
			Name: []byte("pg_listening_channels"), DataTypeOID: textOID, DataTypeSize: -1, TypeModifier: -1,
		}}})
		for _, ch := range tx.channels {
			c.be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(ch)}})
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(len(tx.channels)))})

	case kw == "LISTEN":
		name, err := parseOnlyIdent(rest, "LISTEN")
		if err != nil {
			return err
		}
		if !slices.Contains(tx.channels, name) {
			tx.channels = append(tx.channels, name)
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("LISTEN")})

	case kw == "UNLISTEN":
		if rest == "*" {
			tx.channels = nil
		} else {
			name, err := parseOnlyIdent(rest, "UNLISTEN")
			if err != nil {
				return err
			}
			tx.channels = slices.DeleteFunc(tx.channels, func(ch string) bool { return ch == name })
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("UNLISTEN")})

	case kw == "NOTIFY":
		n, err := parseNotify(rest)
		if err != nil {
			return err
		}
		n.PID = c.pid
		tx.notifies = append(tx.notifies, n)
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("NOTIFY")})

	case kw == "SELECT" && strings.HasPrefix(rest, "pg_"):
		// pgnotify's session and health queries, one row: the session's
		// PID, a primary, an empty notification queue.
		var fields []pgproto3.FieldDescription
		var values [][]byte
		for _, expr := range strings.Split(rest, ",") {
			expr = strings.TrimSpace(expr)
			v := "0"
			switch expr {
			case "pg_backend_pid()":
				v = strconv.FormatUint(uint64(c.pid), 10)
			case "pg_is_in_recovery()":
				v = "f"
			}
			fields = append(fields, pgproto3.FieldDescription{Name: []byte(strings.TrimSuffix(expr, "()")),
				DataTypeOID: textOID, DataTypeSize: -1, TypeModifier: -1})
			values = append(values, []byte(v))
		}
		c.be.Send(&pgproto3.RowDescription{Fields: fields})
		c.be.Send(&pgproto3.DataRow{Values: values})
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})

	case kw == "SELECT":
		c.be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
			Name: []byte("?column?"), DataTypeOID: int4OID, DataTypeSize: 4, TypeModifier: -1,
		}}})
		c.be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})

	default:
		tag := kw
		if tag == "" {
			tag = "OK"
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
	}
	return nil
}

// deliver sends a committed NOTIFY to every session listening on its
// channel. The sender's own copy goes into its answer before ReadyForQuery,
// as the server sends it (its channels are the ones just committed); the
// others' go straight to their sockets, and a session that cannot take one
// (silenced, stalled, ended) does not get it.
func (c *Conn) deliver(n *pgproto3.NotificationResponse, ownChannels []string) {
	if slices.Contains(ownChannels, n.Channel) {
		c.be.Send(n)
	}
	for _, other := range c.srv.Conns() {
		if other == c || !other.listensOn(n.Channel) {
			continue
		}
		_ = other.Send(n)
	}
}

// listensOn reports whether the session listens on channel.
func (c *Conn) listensOn(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.channels, channel)
}

// splitStatements splits a simple query into statements the way the
// server's lexer does for what pgx and pgnotify send: a semicolon inside a
// quoted identifier, a string literal or a comment does not split, comments
// become blanks, and empty statements are dropped. Dollar quoting and
// E'\n' escape strings are not understood.
func splitStatements(sql string) []string {
	var stmts []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			stmts = append(stmts, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(sql); {
		switch {
		case sql[i] == '"' || sql[i] == '\'':
			j, _ := endOfQuoted(sql, i)
			cur.WriteString(sql[i:j])
			i = j
		case strings.HasPrefix(sql[i:], "--"):
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(sql)
			}
			cur.WriteByte(' ')
		case strings.HasPrefix(sql[i:], "/*"):
			i = endOfBlockComment(sql, i)
			cur.WriteByte(' ')
		case sql[i] == ';':
			flush()
			i++
		default:
			cur.WriteByte(sql[i])
			i++
		}
	}
	flush()
	return stmts
}

// endOfQuoted returns the index just past the quoted token starting at
// s[i] (a doubled quote inside it is part of it) and whether it is closed;
// an unclosed one runs to len(s).
func endOfQuoted(s string, i int) (int, bool) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		if s[j] != q {
			continue
		}
		if j+1 < len(s) && s[j+1] == q {
			j++
			continue
		}
		return j + 1, true
	}
	return len(s), false
}

// endOfBlockComment returns the index just past the block comment starting
// at s[i]; block comments nest, as in PostgreSQL.
func endOfBlockComment(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(s)
}

// keyword returns stmt's first word in upper case and the rest, trimmed.
func keyword(stmt string) (kw, rest string) {
	i := 0
	for i < len(stmt) && isIdentByte(stmt[i]) {
		i++
	}
	return strings.ToUpper(stmt[:i]), strings.TrimSpace(stmt[i:])
}

// isIdentByte reports whether b may appear in an unquoted identifier
// (bytes of multi-byte UTF-8 characters included).
func isIdentByte(b byte) bool {
	return b == '_' || b == '$' || b >= 0x80 ||
		'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// parseIdent reads one identifier at the start of s. A quoted one loses its
// quotes and has "" undoubled; an unquoted one is folded to lower case
// (ASCII only), as the server does.
func parseIdent(s string) (name, rest string, ok bool) {
	if s == "" {
		return "", "", false
	}
	if s[0] == '"' {
		j, closed := endOfQuoted(s, 0)
		if !closed || j == 2 {
			return "", "", false // unterminated, or "" (a zero-length name)
		}
		return strings.ReplaceAll(s[1:j-1], `""`, `"`), s[j:], true
	}
	if '0' <= s[0] && s[0] <= '9' || s[0] == '$' || !isIdentByte(s[0]) {
		return "", "", false
	}
	i := 0
	for i < len(s) && isIdentByte(s[i]) {
		i++
	}
	return asciiLower(s[:i]), s[i:], true
}

// parseOnlyIdent parses rest as exactly one identifier, the argument of
// command.
func parseOnlyIdent(rest, command string) (string, *sqlError) {
	name, tail, ok := parseIdent(rest)
	if !ok || strings.TrimSpace(tail) != "" {
		return "", &sqlError{code: "42601", msg: "fakepg: syntax error in " + command}
	}
	return name, nil
}

// parseNotify parses the arguments of NOTIFY: a channel name, then
// optionally a comma and a string literal.
func parseNotify(rest string) (pgproto3.NotificationResponse, *sqlError) {
	bad := &sqlError{code: "42601", msg: "fakepg: syntax error in NOTIFY"}
	name, tail, ok := parseIdent(rest)
	if !ok {
		return pgproto3.NotificationResponse{}, bad
	}
	n := pgproto3.NotificationResponse{Channel: name}
	tail = strings.TrimSpace(tail)
	if tail == "" {
		return n, nil
	}
	if tail[0] != ',' {
		return n, bad
	}
	lit := strings.TrimSpace(tail[1:])
	if lit == "" || lit[0] != '\'' {
		return n, bad
	}
	j, closed := endOfQuoted(lit, 0)
	if !closed || strings.TrimSpace(lit[j:]) != "" {
		return n, bad
	}
	n.Payload = strings.ReplaceAll(lit[1:j-1], "''", "'")
	return n, nil
}

// asciiLower lower-cases the ASCII letters of s and leaves other bytes.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
