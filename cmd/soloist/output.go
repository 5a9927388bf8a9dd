package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// format is an output format of the client verbs (-o).
type format string

const (
	formatTable format = "table"
	formatJSON  format = "json"
	formatYAML  format = "yaml"
)

// printer writes a verb's result in the chosen format.
type printer struct {
	w      io.Writer
	format format
}

// newPrinter returns the printer of -o name; an empty name means table on
// a terminal and JSON otherwise (pipes, files, scripts).
func newPrinter(w io.Writer, name string) (*printer, error) {
	switch f := format(strings.ToLower(strings.TrimSpace(name))); f {
	case formatTable, formatJSON, formatYAML:
		return &printer{w: w, format: f}, nil
	case "":
		if isTerminal(w) {
			return &printer{w: w, format: formatTable}, nil
		}
		return &printer{w: w, format: formatJSON}, nil
	}
	return nil, fmt.Errorf("invalid --output %q: use table, json or yaml", name)
}

// isTerminal reports whether w is a terminal (not merely a character
// device such as /dev/null).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// print writes body, a JSON document, as JSON (indented, as the server
// sent it otherwise), YAML, or with table for the table format.
func (p *printer) print(body []byte, table func(w io.Writer) error) error {
	switch p.format {
	case formatTable:
		tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
		if err := table(tw); err != nil {
			return err
		}
		return tw.Flush()
	case formatYAML:
		b, err := jsonToYAML(body)
		if err != nil {
			return err
		}
		_, err = p.w.Write(b)
		return err
	}
	return printJSON(p.w, body)
}

// printValue is print for a value the CLI makes itself.
func (p *printer) printValue(v any, table func(w io.Writer) error) error {
	b, err := jsonMarshal(v)
	if err != nil {
		return err
	}
	return p.print(b, table)
}

// jsonMarshal is json.Marshal without HTML escaping, as the server writes.
func jsonMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// printJSON pretty-prints a JSON body to w; a body that is not JSON is
// printed as it is, and an empty one not at all.
func printJSON(w io.Writer, body []byte) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		buf.Reset()
		buf.Write(body)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// jsonToYAML writes a JSON document as block-style YAML, keeping the order
// of object keys.
func jsonToYAML(body []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(bytes.TrimSpace(body), &doc); err != nil {
		return nil, fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	if doc.Kind == 0 {
		return nil, nil
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle drops the flow style and quotes JSON was parsed with, so that
// the encoder chooses YAML's (it still quotes strings that need it).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// statusTable is the key/value view of one status body.
func statusTable(body []byte) func(w io.Writer) error {
	return func(w io.Writer) error {
		var st httpapi.InstanceStatus
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("the server's status is not the JSON of a status: %w", err)
		}
		node := st.Node
		if node == "" {
			node = "-"
		}
		for _, kv := range [][2]string{
			{"Instance", st.InstanceID},
			{"Function", st.Name},
			{"Status", st.RuntimeStatus},
			{"Created", timeText(st.CreatedTime)},
			{"Updated", timeText(st.LastUpdatedTime)},
			{"Execution", st.ExecutionID},
			{"Node", node},
			{"Fencing token", fmt.Sprint(st.FencingToken)},
			{"Input", compactJSON(st.Input)},
			{"Custom status", compactJSON(st.CustomStatus)},
			{"Output", compactJSON(st.Output)},
		} {
			fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
		}
		if st.HistoryEvents == nil {
			return nil
		}
		fmt.Fprintf(w, "\nHistory:\n")
		fmt.Fprintf(w, "TIME\tEVENT\tNAME\tDETAIL\n")
		for _, e := range st.HistoryEvents {
			name := e.Name
			if name == "" {
				name = e.FunctionName
			}
			var detail []string
			if e.OrchestrationStatus != "" {
				detail = append(detail, e.OrchestrationStatus)
			}
			if e.FireAt != nil {
				detail = append(detail, "fires "+timeText(*e.FireAt))
			}
			if e.Reason != "" {
				detail = append(detail, e.Reason)
			}
			if e.FailureDetails != nil {
				detail = append(detail, e.FailureDetails.ErrorMessage)
			}
			if len(e.Result) > 0 {
				detail = append(detail, compactJSON(e.Result))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", timeText(e.Timestamp), e.EventType, orDash(name), strings.Join(strings.Fields(strings.Join(detail, "; ")), " "))
		}
		return nil
	}
}

// listTable is the table of instances of a list.
func listTable(body []byte) func(w io.Writer) error {
	return func(w io.Writer) error {
		var list []httpapi.InstanceStatus
		if err := json.Unmarshal(body, &list); err != nil {
			return fmt.Errorf("the server's list is not a JSON array of statuses: %w", err)
		}
		fmt.Fprintln(w, "ID\tFUNCTION\tSTATUS\tCREATED\tUPDATED\tNODE")
		for _, st := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", st.InstanceID, st.Name, st.RuntimeStatus,
				timeText(st.CreatedTime), timeText(st.LastUpdatedTime), orDash(st.Node))
		}
		return nil
	}
}

// line is a table view of one sentence.
func line(format string, args ...any) func(w io.Writer) error {
	return func(w io.Writer) error {
		_, err := fmt.Fprintf(w, format+"\n", args...)
		return err
	}
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func compactJSON(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
