package orchestrator

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// FuzzValidateInstanceID checks the rules of ValidateInstanceID against
// their statement, and that the keys of every valid ID round-trip: its
// record, owners and inbox keys give the ID back and sit in the watched
// range, and its payload, history and blob keys sit outside it.
func FuzzValidateInstanceID(f *testing.F) {
	for _, s := range []string{"order-42", "", ".", "..", "...", "@x", "a@", "a/b", `a\b`, "a#b", "a?b", "a\x00b", "a\u0085b",
		"caf\u00e9", "\xff", strings.Repeat("x", 256), strings.Repeat("\u00e9", 256), strings.Repeat("x", 257), " ", "a b", "%2F"} {
		f.Add(s, "/soloist/")
	}
	f.Add("x", "")
	f.Add("x", "p")
	f.Fuzz(func(t *testing.T, id, prefix string) {
		err := ValidateInstanceID(id)
		if err != nil {
			if !errors.Is(err, ErrInvalidInstanceID) || !errors.Is(err, ErrInvalidInput) || err.Error() == "" {
				t.Fatalf("ValidateInstanceID(%q) = %v: not an ErrInvalidInstanceID", id, err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != "instance ID" || ve.Reason == "" {
				t.Fatalf("ValidateInstanceID(%q) = %#v: want a ValidationError with a reason", id, err)
			}
			if followsRules(id) {
				t.Fatalf("ValidateInstanceID(%q) refused an ID that follows the rules: %v", id, err)
			}
			return
		}
		if !followsRules(id) {
			t.Fatalf("ValidateInstanceID(%q) accepted an ID that breaks the rules", id)
		}
		k := NewKeys(prefix)
		if !strings.HasSuffix(k.Prefix(), "/") || (prefix == "" && k.Prefix() != "/soloist/") {
			t.Fatalf("NewKeys(%q).Prefix() = %q", prefix, k.Prefix())
		}
		for _, c := range []struct{ prefix, key string }{
			{k.Instances(), k.Instance(id)}, {k.Owners(), k.Owner(id)},
		} {
			if got, ok := IDFrom(c.prefix, c.key); !ok || got != id {
				t.Fatalf("IDFrom(%q, %q) = %q, %v; want %q", c.prefix, c.key, got, ok, id)
			}
		}
		ev := NewID()
		if gid, gev, ok := k.InboxID(k.InboxPrefix(id) + ev); !ok || gid != id || gev != ev {
			t.Fatalf("InboxID(InboxPrefix(%q)+%q) = %q, %q, %v", id, ev, gid, gev, ok)
		}
		from, end := k.WatchRange()
		in := func(key string) bool { return key >= from && key < end }
		for _, key := range []string{k.Instance(id), k.Owner(id), k.InboxPrefix(id) + ev} {
			if !in(key) {
				t.Fatalf("%q is outside the watched range [%q, %q)", key, from, end)
			}
		}
		for _, key := range []string{k.Input(id), k.Output(id), k.CustomStatus(id), k.FailureDetails(id),
			k.History(id, ev) + "0000000000", k.Blobs(id, ev) + "x"} {
			if in(key) {
				t.Fatalf("%q, a large key, is inside the watched range [%q, %q)", key, from, end)
			}
		}
		// Another instance's keys never fall under this one's prefixes.
		other := id + "x"
		if strings.HasPrefix(k.InboxPrefix(other), k.InboxPrefix(id)) || strings.HasPrefix(k.Input(other), k.PayloadPrefix(id)) {
			t.Fatalf("the keys of %q fall under the prefixes of %q", other, id)
		}
	})
}

// followsRules restates the contract's rules for instance IDs.
func followsRules(id string) bool {
	if !utf8.ValidString(id) || id == "" || utf8.RuneCountInString(id) > MaxInstanceIDLength ||
		id[0] == '@' || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		if unicode.IsControl(r) || strings.ContainsRune(`/\#?`, r) {
			return false
		}
	}
	return true
}

// FuzzKeys splits arbitrary keys: whatever InboxID and IDFrom accept joins
// back into the key they split.
func FuzzKeys(f *testing.F) {
	f.Add("/soloist/", "/soloist/v1/inbox/order-42/abc")
	f.Add("/soloist/", "/soloist/v1/inbox/order-42")
	f.Add("/soloist/", "/soloist/v1/inbox//x")
	f.Add("p", "p/v1/inbox/a/b/c")
	f.Add("", "/soloist/v1/instances/x")
	f.Fuzz(func(t *testing.T, prefix, key string) {
		k := NewKeys(prefix)
		id, ev, ok := k.InboxID(key)
		switch {
		case ok && (k.InboxPrefix(id)+ev != key || strings.Contains(id, "/")):
			t.Fatalf("InboxID(%q) = %q, %q: does not join back", key, id, ev)
		case !ok && strings.HasPrefix(key, k.Inboxes()) && strings.Contains(key[len(k.Inboxes()):], "/"):
			t.Fatalf("InboxID(%q) refused an inbox key", key)
		}
		got, ok := IDFrom(k.Instances(), key)
		if ok != strings.HasPrefix(key, k.Instances()) || ok && k.Instance(got) != key {
			t.Fatalf("IDFrom(%q, %q) = %q, %v", k.Instances(), key, got, ok)
		}
	})
}

// FuzzParseRecord decodes arbitrary values as control records: it never
// panics, refuses what is not JSON, and whatever it accepts encodes to a
// record that decodes to the same encoding.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"name":"hello","instanceId":"x","runtimeStatus":"Running","createdTime":"2026-01-02T03:04:05.678Z",` +
		`"lastUpdatedTime":"2026-01-02T03:04:05.678Z","executionId":"e1","fencingToken":7}`))
	f.Add([]byte(`{"createdTime":"9999-12-31T23:59:59-23:59","lastUpdatedTime":"0000-01-01T00:00:00+23:59"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"fencingToken":1e400}`))
	f.Add([]byte(`{"name":1}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "orchestrator: corrupt instance record") {
				t.Fatalf("ParseRecord(%q): error %v does not say the record is corrupt", b, err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("ParseRecord accepted %q, which is not JSON", b)
		}
		enc := r.encode()
		r2, err := ParseRecord([]byte(enc))
		if err != nil {
			t.Fatalf("the encoding %s of a decoded record does not decode: %v", enc, err)
		}
		if r2.encode() != enc {
			t.Fatalf("encoding is not stable: %s, then %s", enc, r2.encode())
		}
	})
}

// FuzzParseInboxEntry decodes arbitrary inbox values: key and revision are
// kept, a value that decodes as an event is that event, and anything else
// is delivered as a corrupt-inbox-entry event rather than dropped.
func FuzzParseInboxEntry(f *testing.F) {
	f.Add("/soloist/v1/inbox/x/k", int64(5), []byte(`{"eventType":"EventRaised","name":"approve","input":{"ok":true},"timestamp":"2026-01-02T03:04:05Z"}`))
	f.Add("k", int64(0), []byte(`{"eventType":"ExecutionSuspended","reason":"ops"}`))
	f.Add("k", int64(-1), []byte(`not json`))
	f.Add("", int64(1), []byte(`{"fireAt":"2026-01-02T03:04:05Z","seq":-3}`))
	f.Add("k", int64(1), []byte(`{"input":}`))
	f.Fuzz(func(t *testing.T, key string, rev int64, value []byte) {
		e := ParseInboxEntry(key, rev, value)
		if e.Key != key || e.CreateRevision != rev {
			t.Fatalf("ParseInboxEntry(%q, %d) kept %q, %d", key, rev, e.Key, e.CreateRevision)
		}
		var want HistoryEvent
		if err := json.Unmarshal(value, &want); err != nil {
			if e.Event.EventType != EventEventRaised || e.Event.Name != "corrupt-inbox-entry" || string(e.Event.Input) != "null" {
				t.Fatalf("a value that is no event (%v) gave %+v", err, e.Event)
			}
			return
		}
		if !reflect.DeepEqual(e.Event, want) {
			t.Fatalf("ParseInboxEntry(%q) = %+v, want %+v", value, e.Event, want)
		}
	})
}

// FuzzHistoryBatch decodes arbitrary history keys (values split at NUL
// bytes, one key each): a key that is not a JSON array of events fails the
// read and names the key; otherwise the events are every key's, in order,
// and they re-encode to keys that decode to the same events.
func FuzzHistoryBatch(f *testing.F) {
	f.Add([]byte(`[{"seq":0,"eventType":"ExecutionStarted","timestamp":"2026-01-02T03:04:05Z","name":"hello","input":{"a":1}}]` + "\x00" +
		`[{"seq":1,"eventType":"TaskScheduled","taskId":1,"name":"act"},{"seq":2,"eventType":"TaskCompleted","taskId":1,"result":"r"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"seq":0}]` + "\x00" + `{"seq":1}`))
	f.Add([]byte(`[{"fireAt":"2026-01-02T03:04:05Z","failureDetails":{"errorType":"x","errorMessage":"y"}}]`))
	f.Add([]byte(`[{"timestamp":"10000-01-01T00:00:00Z"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var kvs []*mvccpb.KeyValue
		var want int
		corrupt := ""
		for i, v := range bytes.Split(b, []byte{0}) {
			key := historyKey("/h/x/e/", i)
			kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(key), Value: v})
			var batch []HistoryEvent
			if err := json.Unmarshal(v, &batch); err != nil && corrupt == "" {
				corrupt = key
			}
			want += len(batch)
		}
		out, err := appendHistory(nil, kvs)
		if corrupt != "" {
			if err == nil || !strings.Contains(err.Error(), "corrupt history at "+corrupt) {
				t.Fatalf("a corrupt key %s read as %v, %v", corrupt, out, err)
			}
			return
		}
		if err != nil || len(out) != want {
			t.Fatalf("read %d events (%v), want %d", len(out), err, want)
		}
		enc, err := json.Marshal(out)
		if err != nil {
			t.Skipf("decoded events do not encode (%v); history is only ever written from encodable events", err)
		}
		again, err := appendHistory(nil, []*mvccpb.KeyValue{{Key: []byte("/h/x/e/0000000000"), Value: enc}})
		if err != nil || len(again) != len(out) {
			t.Fatalf("re-encoded history %s reads as %d events (%v), want %d", enc, len(again), err, len(out))
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("history does not round-trip:\n%s\n%s", enc, enc2)
		}
	})
}
