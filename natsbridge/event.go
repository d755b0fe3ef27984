package natsbridge

import (
	"encoding/json"
	"time"

	"github.com/seed-c59d106d/pgnotify"
)

// eventJSON is what consumers of prefix._events read: the same fields as the
// pgnotify command's event lines.
type eventLine struct {
	Event string `json:"event"`
	DB    string `json:"db"`
	Time  string `json:"time"`
	Error string `json:"error,omitempty"`
}

func eventJSON(ev pgnotify.Event, db string, at time.Time) []byte {
	e := eventLine{Event: "recovered", DB: db, Time: at.UTC().Format(time.RFC3339Nano)}
	if ev.Kind == pgnotify.Dead {
		e.Event = "dead"
		if ev.Err != nil {
			e.Error = ev.Err.Error()
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // strings always encode
	}
	return b
}
