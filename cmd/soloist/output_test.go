package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
)

// /dev/null is a character device, and not a terminal: output to it (and
// logs with --log-format auto) is JSON.
func TestDevNullIsNotATerminal(t *testing.T) {
	t.Parallel()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("%s is not a character device here (%v); the test means nothing", os.DevNull, err)
	}
	if isTerminal(f) {
		t.Fatalf("isTerminal(%s) = true", os.DevNull)
	}
	p, err := newPrinter(f, "")
	if err != nil || p.format != formatJSON {
		t.Fatalf("default format on %s: %v, %v; want json", os.DevNull, p, err)
	}
}

const statusBody = `{"name":"Approval","instanceId":"order-42","runtimeStatus":"Completed","input":{"timeoutSeconds":300},` +
	`"customStatus":"waiting","output":{"approved":true,"by":"alice"},"createdTime":"2025-01-02T03:04:05.123Z",` +
	`"lastUpdatedTime":"2025-01-02T03:05:06Z","executionId":"e1","node":"n1","fencingToken":42}`

func TestOutputFormats(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch {
		case r.URL.Path == durableBase+"/instances":
			reply(w, 200, `[`+statusBody+`,{"name":"HelloCities","instanceId":"h1","runtimeStatus":"Running","createdTime":"2025-01-02T03:04:05Z","lastUpdatedTime":"2025-01-02T03:04:06Z","node":""}]`)
		case r.URL.Query().Get("showHistory") == "true":
			reply(w, 200, strings.TrimSuffix(statusBody, "}")+`,"historyEvents":[{"EventType":"ExecutionStarted","Timestamp":"2025-01-02T03:04:05Z","FunctionName":"Approval"},`+
				`{"EventType":"EventRaised","Timestamp":"2025-01-02T03:05:00Z","Name":"approve"},`+
				`{"EventType":"ExecutionCompleted","Timestamp":"2025-01-02T03:05:06Z","OrchestrationStatus":"Completed"}]}`)
		case r.Method == "POST":
			reply(w, 202, `{"id":"my id","statusQueryGetUri":"http://x/instances/my%20id"}`)
		default:
			reply(w, 200, statusBody)
		}
	})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "order-42", "-o", "table"}, `Instance:       order-42
Function:       Approval
Status:         Completed
Created:        2025-01-02T03:04:05Z
Updated:        2025-01-02T03:05:06Z
Execution:      e1
Node:           n1
Fencing token:  42
Input:          {"timeoutSeconds":300}
Custom status:  "waiting"
Output:         {"approved":true,"by":"alice"}
`},
		{[]string{"status", "order-42", "--history", "-o", "table"}, `Output:         {"approved":true,"by":"alice"}

History:
TIME                  EVENT               NAME      DETAIL
2025-01-02T03:04:05Z  ExecutionStarted    Approval  
2025-01-02T03:05:00Z  EventRaised         approve   
2025-01-02T03:05:06Z  ExecutionCompleted  -         Completed
`},
		{[]string{"list", "-o", "table"}, `ID        FUNCTION     STATUS     CREATED               UPDATED               NODE
order-42  Approval     Completed  2025-01-02T03:04:05Z  2025-01-02T03:05:06Z  n1
h1        HelloCities  Running    2025-01-02T03:04:05Z  2025-01-02T03:04:06Z  -
`},
		{[]string{"status", "order-42", "-o", "yaml"}, `name: Approval
instanceId: order-42
runtimeStatus: Completed
input:
  timeoutSeconds: 300
customStatus: waiting
output:
  approved: true
  by: alice
createdTime: "2025-01-02T03:04:05.123Z"
lastUpdatedTime: "2025-01-02T03:05:06Z"
executionId: e1
node: n1
fencingToken: 42
`},
		{[]string{"start", "Approval", "my id", "-o", "table"}, "Started Approval as instance 'my id'. See it with: soloist status 'my id'\n"},
		{[]string{"start", "Approval", "my id", "-o", "yaml"}, "id: my id\nstatusQueryGetUri: http://x/instances/my%20id\n"},
		{[]string{"start", "Approval", "my id", "-o", "json"}, "{\n  \"id\": \"my id\",\n  \"statusQueryGetUri\": \"http://x/instances/my%20id\"\n}\n"},
	} {
		out, errOut, code := runCLI(t, f.srv.URL, nil, c.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%q: exit %d, stderr %q", c.args, code, errOut)
			continue
		}
		if !strings.HasSuffix(out, c.want) {
			t.Errorf("%q printed\n%s\nwant (the end)\n%s", c.args, out, c.want)
		}
	}
	// Without -o and not on a terminal: the server's JSON, indented.
	out, _, _ := runCLI(t, f.srv.URL, nil, "status", "order-42")
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.HasPrefix(out, "{\n  \"name\": \"Approval\",\n") {
		t.Errorf("default output %q (%v)", out, err)
	}
}

func TestJSONToYAMLQuotesWhatNeedsIt(t *testing.T) {
	t.Parallel()
	b, err := jsonToYAML([]byte(`{"s":"true","n":"12","e":"","multi":"a\nb","list":[1,"x",null],"nested":{"k":[]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := "s: \"true\"\nn: \"12\"\ne: \"\"\nmulti: |-\n  a\n  b\nlist:\n  - 1\n  - x\n  - null\nnested:\n  k: []\n"
	if string(b) != want {
		t.Errorf("yaml\n%s\nwant\n%s", b, want)
	}
}
