package natsbridge_test

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func jetstreamConfig(name string, subjects ...string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage, Duplicates: time.Minute}
}
