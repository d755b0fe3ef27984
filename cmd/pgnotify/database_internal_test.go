package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDatabases: labels are host:port/dbname without the password, a
// repeated database gets #2, #3; $DATABASE_URL is the default; connecting
// times out after defaultConnectTimeout unless the string says otherwise;
// sessions carry application_name pgnotify unless the string names one.
func TestDatabases(t *testing.T) {
	e := &env{getenv: func(k string) string {
		if k == "DATABASE_URL" {
			return "postgres://app:secret@db.example:6543/shop"
		}
		return ""
	}}
	dbs, err := databases(e, []string{
		"postgres://u:secret@h1:5433/a?connect_timeout=3&application_name=mine",
		"host=h2 port=5434 dbname=b user=u password=secret",
		"postgres://u:secret@h1:5433/a",
		"postgres://u:other@h1:5433/a",
	})
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, db := range dbs {
		labels = append(labels, db.label)
	}
	if got, want := fmt.Sprint(labels), "[h1:5433/a h2:5434/b h1:5433/a#2 h1:5433/a#3]"; got != want {
		t.Errorf("labels %s, want %s", got, want)
	}
	if got := dbs[0].config.ConnectTimeout; got != 3*time.Second {
		t.Errorf("connect_timeout=3: ConnectTimeout %v", got)
	}
	if got := dbs[1].config.ConnectTimeout; got != defaultConnectTimeout {
		t.Errorf("no connect_timeout: ConnectTimeout %v, want %v", got, defaultConnectTimeout)
	}
	if got := dbs[0].config.RuntimeParams["application_name"]; got != "mine" {
		t.Errorf("application_name %q, want the string's", got)
	}
	if got := dbs[1].config.RuntimeParams["application_name"]; got != applicationName {
		t.Errorf("application_name %q, want %q", got, applicationName)
	}

	dbs, err = databases(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 1 || dbs[0].label != "db.example:6543/shop" {
		t.Errorf("default: %v, want $DATABASE_URL's database", dbs)
	}

	_, err = databases(e, []string{"postgres://u:secret@h1:bad/a"})
	var ue *usageError
	if !errors.As(err, &ue) || strings.Contains(err.Error(), "secret") {
		t.Errorf("unparsable string: error %v, want a usage error without the password", err)
	}
}
