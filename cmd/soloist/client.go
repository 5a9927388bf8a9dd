package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// durableBase is the prefix of the Durable Functions instance routes.
const durableBase = "/runtime/webhooks/durabletask"

// requestTimeout bounds one HTTP request of a client verb.
const requestTimeout = 30 * time.Second

// maxResponse caps what a client verb reads of a response.
const maxResponse = 64 << 20

// clientOptions are the flags every client verb has.
type clientOptions struct {
	server string
	apiKey string
	output string
}

// addClientFlags defines --server, --api-key (with their variables) and
// --output on cmd.
func addClientFlags(cmd *cobra.Command, o *clientOptions) {
	fs := cmd.Flags()
	fs.StringVar(&o.server, "server", "http://127.0.0.1:8080", "`URL` of a Soloist node's HTTP API")
	fs.StringVar(&o.apiKey, "api-key", "", "API `key`, sent as Authorization: Bearer")
	withEnv(fs, "server", "api-key")
	fs.StringVarP(&o.output, "output", "o", "", "output `format`: table, json or yaml; empty means table on a terminal, else json")
}

// connect checks the client flags and returns the client and the printer
// of the verb.
func (o *clientOptions) connect(cmd *cobra.Command) (*apiClient, *printer, error) {
	p, err := newPrinter(cmd.OutOrStdout(), o.output)
	if err != nil {
		return nil, nil, usagef(cmd.Name(), "%v", err)
	}
	c, err := newAPIClient(o.server, o.apiKey)
	if err != nil {
		return nil, nil, usagef(cmd.Name(), "%v", err)
	}
	return c, p, nil
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

// apiError is an HTTP error answer of the server: exit code 1.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.code) }

// unreachableError means the server (or, for serve, etcd) could not be
// reached: exit code 3.
type unreachableError struct {
	msg string
	err error
}

func (e *unreachableError) Error() string { return e.msg }
func (e *unreachableError) Unwrap() error { return e.err }

// response is a successful answer.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends one request. path must already be escaped. A non-2xx answer is
// an *apiError with the server's message; no answer is an
// *unreachableError.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, header http.Header, body []byte) (*response, error) {
	return c.doWithin(ctx, requestTimeout, method, path, query, header, body)
}

// doWithin is do with a bound of d on the request (do's is
// requestTimeout), for a request that the server holds on purpose.
func (c *apiClient) doWithin(ctx context.Context, d time.Duration, method, path string, query url.Values, header http.Header, body []byte) (*response, error) {
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, u, rd)
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
		if ctx.Err() != nil {
			return nil, context.Cause(ctx) // the caller gave up, not the server
		}
		return nil, &unreachableError{err: err, msg: fmt.Sprintf(
			"cannot reach the Soloist server at %s: %v; is 'soloist serve' running there? Set --server or SOLOIST_SERVER", c.base, unwrapURLError(err))}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, &unreachableError{err: err, msg: fmt.Sprintf("read the answer of the Soloist server at %s: %v", c.base, err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.explain(&apiError{code: resp.StatusCode, msg: errorMessage(resp, b)})
	}
	return &response{code: resp.StatusCode, header: resp.Header, body: b}, nil
}

// explain rewrites the server's error messages that are written for HTTP
// clients (they name routes and headers) into what a CLI user does.
func (c *apiClient) explain(e *apiError) *apiError {
	switch {
	case e.code == http.StatusUnauthorized && c.apiKey == "":
		e.msg = "the server needs an API key: pass --api-key KEY or set SOLOIST_API_KEY"
	case e.code == http.StatusUnauthorized:
		e.msg = "the server refused the API key given with --api-key or SOLOIST_API_KEY; check it against the server's --api-keys-file"
	case e.code == http.StatusNotFound && strings.HasPrefix(e.msg, "no instance with ID '"):
		id, _, _ := strings.Cut(strings.TrimPrefix(e.msg, "no instance with ID '"), "' exists")
		e.msg = fmt.Sprintf("no instance '%s'; check the ID, or run 'soloist list' to see the instances", id)
	case (e.code == http.StatusNotFound && strings.HasPrefix(e.msg, "no route for")) || e.code == http.StatusMethodNotAllowed:
		e.msg = fmt.Sprintf("the server at %s does not serve this request; is --server the base URL of a Soloist node? (%s)", c.base, e.msg)
	}
	return e
}

// instanceError adds what to do to the errors of a verb on instance id.
func instanceError(err error, verb, id string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.code == http.StatusConflict && verb == "purge" {
		ae.msg += fmt.Sprintf(" (soloist terminate %s), or wait until it finishes", shellQuote(id))
	}
	return err
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
	return http.StatusText(resp.StatusCode)
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

// shellQuote quotes s for a shell if it needs it, for the commands that
// messages suggest.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
