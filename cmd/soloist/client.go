package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// durableBase is the prefix of the Durable Functions instance routes.
const durableBase = "/runtime/webhooks/durabletask"

// requestTimeout bounds one HTTP request of a client verb.
const requestTimeout = 30 * time.Second

// maxResponse caps what a client verb reads of a response.
const maxResponse = 64 << 20

// clientFlags are the flags every client verb has.
type clientFlags struct {
	server string
	apiKey string
}

// newClientFlagSet returns a flag set with --server and --api-key; the verb
// adds its own flags.
func newClientFlagSet(name string, cf *clientFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&cf.server, "server", "http://127.0.0.1:8080", "`URL` of a Soloist node's HTTP API")
	fs.StringVar(&cf.apiKey, "api-key", "", "API `key`, sent as Authorization: Bearer")
	return fs
}

// parseClient reads a verb's flags (after SOLOIST_SERVER and
// SOLOIST_API_KEY) and checks the number of positional arguments.
func parseClient(fs *flag.FlagSet, cf *clientFlags, args []string, e env, stderr io.Writer, synopsis string, minPos, maxPos int) ([]string, *apiClient, error) {
	setUsage(fs, stderr, synopsis, map[string]bool{"server": true, "api-key": true})
	if err := applyEnv(fs, e, "server", "api-key"); err != nil {
		return nil, nil, usagef(fs.Name(), "%v", err)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, &exitError{code: 2}
	}
	switch {
	case len(pos) < minPos:
		return nil, nil, usagef(fs.Name(), "missing arguments; usage: %s", synopsis)
	case len(pos) > maxPos:
		return nil, nil, usagef(fs.Name(), "unexpected argument %q; usage: %s", pos[maxPos], synopsis)
	}
	c, err := newAPIClient(cf.server, cf.apiKey)
	if err != nil {
		return nil, nil, usagef(fs.Name(), "%v", err)
	}
	return pos, c, nil
}

// apiClient talks to a node's HTTP API.
type apiClient struct {
	base   string // scheme://host[/path], no trailing slash
	apiKey string
	http   *http.Client
}

func newAPIClient(server, apiKey string) (*apiClient, error) {
	s := strings.TrimSpace(server)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid --server %q: use a URL like http://127.0.0.1:8080", server)
	}
	u.RawQuery, u.Fragment = "", ""
	return &apiClient{base: strings.TrimRight(u.String(), "/"), apiKey: apiKey, http: &http.Client{}}, nil
}

// apiError is an HTTP error answer of the server.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.code) }

// response is a successful answer.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends one request. path must already be escaped. A non-2xx answer is
// an *apiError with the server's message.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, header http.Header, body []byte) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Soloist server at %s: %w; is 'soloist serve' running there? Set --server or SOLOIST_SERVER", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s %s: %w", method, u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &apiError{code: resp.StatusCode, msg: errorMessage(resp, b)}
	}
	return &response{code: resp.StatusCode, header: resp.Header, body: b}, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorMessage is the server's {"error": ...} message, or the body's text,
// or the status text.
func errorMessage(resp *http.Response, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if s := strings.TrimSpace(string(body)); s != "" && len(s) < 1000 {
		return s
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return "unauthorized: pass an API key with --api-key or SOLOIST_API_KEY"
	}
	return http.StatusText(resp.StatusCode)
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

// jsonArg checks a JSON argument given on the command line.
func jsonArg(cmd, flagName, v string) ([]byte, error) {
	b := []byte(strings.TrimSpace(v))
	if !json.Valid(b) {
		return nil, usagef(cmd, "--%s is not valid JSON: %.80q; quote strings, e.g. --%s '\"text\"' or --%s '{\"n\":1}'", flagName, v, flagName, flagName)
	}
	return b, nil
}

func instancePath(id string, rest ...string) string {
	p := durableBase + "/instances/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}
