package natsbridge

import (
	"strings"
	"unicode"
)

// eventsToken is the last token of the events subject, Prefix + "._events".
const eventsToken = "_events"

// checkPrefix checks that prefix is one or more NATS subject tokens.
func checkPrefix(prefix string) error {
	if why := badSubject(prefix); why != "" {
		return &subjectError{what: "prefix", name: prefix, why: why}
	}
	return nil
}

// checkChannel checks that prefix + "." + channel is a literal NATS subject
// other than the events subject.
func checkChannel(channel string) error {
	if why := badSubject(channel); why != "" {
		return &subjectError{what: "channel", name: channel, why: why}
	}
	if channel == eventsToken {
		return &subjectError{what: "channel", name: channel, why: "reserved for Dead and Recovered events"}
	}
	return nil
}

// badSubject says why s is not a literal NATS subject, or returns "".
// PostgreSQL channels may hold anything but NUL; NATS splits subjects on
// '.', ends them at whitespace and reads '*' and '>' as wildcards, so a
// channel with those would be published on a subject other than its own, or
// not at all.
func badSubject(s string) string {
	if s == "" {
		return "empty"
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return "whitespace or a control character"
		case r == '*' || r == '>':
			return "a wildcard, '*' or '>'"
		}
	}
	if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return "an empty token: a leading, trailing or doubled '.'"
	}
	return ""
}

// CheckChannels returns an error matching [ErrSubject] for the prefix or
// the first channel that NATS subjects cannot carry, or nil: what [Notify]
// and [Durable] would refuse, checked before starting them.
func CheckChannels(prefix string, channels ...string) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	for _, ch := range channels {
		if err := checkChannel(ch); err != nil {
			return err
		}
	}
	return nil
}
