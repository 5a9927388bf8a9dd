package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// duplicateKey returns a key that appears twice in one object of the JSON
// document line, at any depth, or "". encoding/json would keep one of the
// two silently, so the tokens are walked.
func duplicateKey(line string) (string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	var walk func() (string, error)
	walk = func() (string, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", err
				}
				key := k.(string)
				if seen[key] {
					return key, nil
				}
				seen[key] = true
				if dup, err := walk(); dup != "" || err != nil {
					return dup, err
				}
			}
			_, err = dec.Token()
			return "", err
		case json.Delim('['):
			for dec.More() {
				if dup, err := walk(); dup != "" || err != nil {
					return dup, err
				}
			}
			_, err = dec.Token()
			return "", err
		}
		return "", nil
	}
	dup, err := walk()
	if err == nil && dup == "" {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("more than one JSON value on the line")
		}
	}
	return dup, err
}

func TestDuplicateKey(t *testing.T) {
	t.Parallel()
	for line, want := range map[string]string{
		`{"a":1,"b":2}`:                     "",
		`{"a":1,"a":2}`:                     "a",
		`{"a":{"x":1,"y":[{"z":1,"z":2}]}}`: "z",
		`{"a":[1,2,{"b":{}}],"c":"a"}`:      "",
	} {
		if got, err := duplicateKey(line); got != want || err != nil {
			t.Errorf("%s: %q, %v; want %q", line, got, err, want)
		}
	}
}

// checkLogs checks the JSON log lines of a serve run: no key twice on a
// line, and no cancelled etcd call at warn level or above.
func checkLogs(t *testing.T, lines []string) {
	t.Helper()
	if len(lines) == 0 {
		t.Fatal("no JSON log lines")
	}
	for _, l := range lines {
		dup, err := duplicateKey(l)
		if err != nil {
			t.Errorf("log line is not one JSON object (%v): %s", err, l)
			continue
		}
		if dup != "" {
			t.Errorf("key %q twice in: %s", dup, l)
		}
		var e struct {
			Level, Msg, Error, Node string
		}
		_ = json.Unmarshal([]byte(l), &e)
		if e.Node == "" {
			t.Errorf("log line without the node: %s", l)
		}
		if e.Level != "DEBUG" && e.Level != "INFO" && e.Msg == retryFailed && ended(e.Error) {
			t.Errorf("a cancelled etcd call logged at %s: %s", e.Level, l)
		}
		if e.Level == "ERROR" && strings.Contains(e.Msg, "/metrics") {
			t.Errorf("/metrics logged an error: %s", l)
		}
	}
}

func TestUniqueKeys(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.With("function", "outer", "node", "n1").With("function", "inner").Info("hello", "function", "call", "msg", "x", "n", 1, "n", 2)
	log.WithGroup("g").Info("grouped", "a", 1, "a", 2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, l := range lines {
		if dup, err := duplicateKey(l); dup != "" || err != nil {
			t.Errorf("%q twice (%v): %s", dup, err, l)
		}
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["function"] != "call" || first["node"] != "n1" || first["n"] != 2.0 || first["msg"] != "hello" || first["attr_msg"] != "x" {
		t.Errorf("line %s: want the last value of each key", lines[0])
	}
}

// The etcd client logs every failed attempt of a call; a cancelled or
// timed-out call is the caller's to report, so it goes to debug.
func TestEtcdRetryLinesOfEndedCallsAreDebug(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	zl, _ := zapLogger(log, zapcore.WarnLevel)
	zl.Warn(retryFailed, zap.String("target", "etcd-endpoints://x"), zap.Error(errors.New("rpc error: code = Canceled desc = context canceled")))
	zl.Warn(retryFailed, zap.Error(errors.New("rpc error: code = DeadlineExceeded desc = context deadline exceeded")))
	if buf.Len() != 0 {
		t.Errorf("cancelled calls logged at warn: %s", buf.String())
	}
	zl.Warn(retryFailed, zap.Error(errors.New("rpc error: code = Unavailable desc = etcdserver: leader changed")))
	if !strings.Contains(buf.String(), `"level":"WARN"`) || !strings.Contains(buf.String(), "leader changed") {
		t.Errorf("other failures must stay at warn: %q", buf.String())
	}
}
