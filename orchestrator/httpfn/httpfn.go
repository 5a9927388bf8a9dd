package httpfn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/internal/fncommon"
)

// DefaultMaxResponse is the default cap of a successful response body: 1 MiB.
const DefaultMaxResponse = 1 << 20

// DefaultMethod is the method used when Spec.Method is empty.
const DefaultMethod = http.MethodPost

// bodyExcerpt is how much of a non-2xx response body an error carries.
const bodyExcerpt = 4 << 10

// The headers of the contract (docs/contract.md section 6). Configured headers may not
// use the Soloist- prefix.
const (
	HeaderInstanceID   = fncommon.HeaderInstanceID
	HeaderExecutionID  = fncommon.HeaderExecutionID
	HeaderFencingToken = fncommon.HeaderFencingToken
	HeaderFunction     = fncommon.HeaderFunction
)

const reservedPrefix = "Soloist-"

// userAgent is sent unless the configuration sets User-Agent.
const userAgent = "soloist-httpfn"

// Transport settings of the default client.
const (
	dialTimeout           = 30 * time.Second
	tcpKeepAlive          = 30 * time.Second
	tlsHandshakeTimeout   = 10 * time.Second
	expectContinueTimeout = 1 * time.Second
	idleConnTimeout       = 90 * time.Second
)

var (
	// ErrInvalidConfig is matched (errors.Is) by every *ConfigError.
	ErrInvalidConfig = errors.New("httpfn: invalid configuration")
	// ErrResponseTooLarge means a 2xx response body was larger than
	// Options.MaxResponse. It is not retried.
	ErrResponseTooLarge = errors.New("httpfn: response too large")
	// ErrTimeout means an attempt ran longer than Options.Timeout.
	ErrTimeout = errors.New("httpfn: timed out")
)

// Spec is what to call: the "http" block of a function in the config file.
type Spec struct {
	// URL is the absolute http:// or https:// URL to call.
	URL string
	// Method defaults to POST. It is upper-cased.
	Method string
	// Headers are added to every request. Names are case-insensitive and
	// may not start with "Soloist-". A "Host" entry sets the request's Host.
	Headers map[string]string
}

// Options configure an HTTP function.
type Options struct {
	// Timeout bounds each attempt, from sending the request to reading the
	// whole response; 0 means no limit. An attempt that times out fails
	// (and is retried if Retry allows).
	Timeout time.Duration
	// Retry re-sends the request after a failed attempt. Defaults to one
	// attempt.
	Retry Retry
	// Client sends the requests. Defaults to a client of this function
	// alone; see the package documentation.
	Client *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// MaxResponse caps a successful response body in bytes. Defaults to
	// DefaultMaxResponse.
	MaxResponse int
}

// Retry says how often and how soon a failed attempt is repeated: at most
// MaxAttempts attempts (the first included; 0 means 1), Backoff apart,
// none starting later than Timeout (if set) after the first began. It is
// the same type as execfn.Retry.
type Retry = fncommon.Retry

// ConfigError says which part of a Spec or Options is wrong and how to fix
// it. It matches ErrInvalidConfig.
type ConfigError struct {
	// Field is the name of the setting as the config file spells it, such
	// as "url", "method", "headers" or "retry.maxAttempts".
	Field string
	// Value is the offending value (a URL with its password redacted).
	Value string
	// Reason says what is wrong and how to fix it.
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("httpfn: invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("httpfn: invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// StatusError is the failure of an attempt answered with a status outside
// 2xx.
type StatusError struct {
	// Method and URL are those of the request; the URL has its password
	// and query hidden.
	Method, URL string
	// StatusCode is the response's status code.
	StatusCode int
	// Status is the status line's text, such as "503 Service Unavailable".
	Status string
	// Body is the first 4 KiB of the response body, trimmed; "..." ends it
	// if the body was longer.
	Body string
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s answered %s", e.Method, e.URL, e.Status)
	if e.Body != "" {
		b.WriteString(": ")
		b.WriteString(e.Body)
	} else {
		b.WriteString(" (empty body)")
	}
	return b.String()
}

// Retryable reports whether Soloist retries the status: 5xx and 429. Any
// other 4xx is final.
func (e *StatusError) Retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}

// Invocation is what one run of an HTTP function is about: its Input is
// the request body (empty sends null), and Header returns the contract's
// headers. It is the same type as execfn.Invocation.
type Invocation = fncommon.Invocation

// New checks spec and opts and returns an orchestration that calls the URL
// as described in the package documentation. A configuration error is a
// *ConfigError that says what to fix.
func New(spec Spec, opts Options) (orchestrator.OrchestratorFunc, error) {
	f, err := compile(spec, opts)
	if err != nil {
		return nil, err
	}
	return func(octx *orchestrator.OrchestrationContext) (any, error) {
		out, err := f.call(octx.Context(), fncommon.InvocationOf(octx))
		if err != nil {
			return nil, err
		}
		return out, nil
	}, nil
}

// Run checks spec and opts, calls the URL for inv with the retries of opts
// and returns the output of the first successful attempt. If ctx is
// cancelled it aborts the request in flight, does not retry, and returns
// context.Cause(ctx). New wraps the same call; Run is exported for callers
// that have no OrchestrationContext.
func Run(ctx context.Context, spec Spec, inv Invocation, opts Options) (json.RawMessage, error) {
	f, err := compile(spec, opts)
	if err != nil {
		return nil, err
	}
	return f.call(ctx, inv)
}

// function is a checked Spec with its Options.
type function struct {
	method   string
	url      string
	shownURL string // for errors and logs: no password, no query
	header   http.Header
	host     string
	opts     Options
	client   *http.Client
	ownIdle  bool // the client is ours: close its idle connections after a call
	log      *slog.Logger
	attempts int
	maxResp  int
}

func compile(spec Spec, opts Options) (*function, error) {
	u, err := checkURL(spec.URL)
	if err != nil {
		return nil, err
	}
	method, err := checkMethod(spec.Method)
	if err != nil {
		return nil, err
	}
	header, host, err := checkHeaders(spec.Headers)
	if err != nil {
		return nil, err
	}
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	f := &function{
		method: method, url: spec.URL, shownURL: showURL(u), header: header, host: host, opts: opts,
		client: opts.Client, log: opts.Logger,
		attempts: max(opts.Retry.MaxAttempts, 1), maxResp: opts.MaxResponse,
	}
	if f.client == nil {
		f.client, f.ownIdle = newClient(), true
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.maxResp == 0 {
		f.maxResp = DefaultMaxResponse
	}
	return f, nil
}

// newClient returns a client with a transport of its own: bounded connect
// and TLS handshake, TCP keep-alives to notice dead peers, proxies from the
// environment, and no overall deadline (Options.Timeout is the deadline).
func newClient() *http.Client {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ExpectContinueTimeout: expectContinueTimeout,
		IdleConnTimeout:       idleConnTimeout,
		MaxIdleConns:          16,
	}}
}

func checkURL(raw string) (*url.URL, error) {
	bad := func(value, reason string) error {
		return &ConfigError{Field: "url", Value: value, Reason: reason}
	}
	if strings.TrimSpace(raw) == "" {
		return nil, bad("", "it is empty; set it to the absolute http:// or https:// URL to call, such as https://search.internal/reindex")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, bad(redactRaw(raw), fmt.Sprintf("it does not parse (%v); write it as an absolute URL such as https://search.internal/reindex, with no spaces around it", err))
	}
	shown := u.Redacted()
	switch {
	case !strings.Contains(raw, "://") || u.Scheme == "":
		return nil, bad(shown, "it is not an absolute URL; write it with scheme and host, as http://host/path or https://host/path, such as https://search.internal/reindex")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad(shown, fmt.Sprintf("its scheme is %q; only http and https are supported", u.Scheme))
	case u.Opaque != "" || u.Hostname() == "":
		return nil, bad(shown, "it has no host; write it as http://host/path or https://host/path, such as https://search.internal/reindex")
	}
	return u, nil
}

// redactRaw hides a password in a URL that does not parse.
func redactRaw(raw string) string {
	rest, ok := strings.CutPrefix(raw, "http://")
	scheme := "http://"
	if !ok {
		rest, ok = strings.CutPrefix(raw, "https://")
		scheme = "https://"
	}
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + user + ":xxxxx" + rest[at:]
}

// showURL is the URL as errors and logs show it: without password or query,
// which often carry credentials.
func showURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	s := c.Redacted()
	if u.RawQuery != "" {
		s += "?..."
	}
	return s
}

func checkMethod(m string) (string, error) {
	if m == "" {
		return DefaultMethod, nil
	}
	if !isToken(m) {
		return "", &ConfigError{Field: "method", Value: m,
			Reason: "it is not a valid HTTP method; use one word of letters such as POST, PUT or GET, without spaces"}
	}
	m = strings.ToUpper(m)
	if m == http.MethodConnect {
		return "", &ConfigError{Field: "method", Value: m,
			Reason: "CONNECT opens a tunnel and cannot call a function; use POST, PUT or GET"}
	}
	return m, nil
}

// managedHeaders are set by the HTTP client from the request itself.
var managedHeaders = map[string]bool{
	"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Keep-Alive": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Upgrade": true,
}

func checkHeaders(in map[string]string) (http.Header, string, error) {
	h := http.Header{}
	host := ""
	seen := map[string]string{}
	bad := func(name, reason string) error {
		return &ConfigError{Field: "headers", Value: name, Reason: reason}
	}
	for _, name := range slices.Sorted(maps.Keys(in)) { // the same error every time
		value := in[name]
		if !isToken(name) {
			return nil, "", bad(name, "it is not a valid header name; use letters, digits and - only (no spaces, colons or non-ASCII characters), such as X-Team")
		}
		canon := http.CanonicalHeaderKey(name)
		if prev, dup := seen[canon]; dup {
			return nil, "", bad(name, fmt.Sprintf("it is the same header as %q (names are case-insensitive); keep one of them", prev))
		}
		seen[canon] = name
		switch {
		case strings.HasPrefix(canon, reservedPrefix):
			return nil, "", bad(name, fmt.Sprintf("the Soloist- prefix is reserved for the headers Soloist sets itself (%s, %s, %s, %s); remove it or choose another name",
				HeaderInstanceID, HeaderExecutionID, HeaderFencingToken, HeaderFunction))
		case managedHeaders[canon]:
			return nil, "", bad(name, "the HTTP client sets this header from the request itself; remove it")
		case !validHeaderValue(value):
			return nil, "", bad(name, "its value contains a control character such as a newline; a header value must be one line of printable text")
		}
		if canon == "Host" {
			if !validHost(value) {
				return nil, "", bad(name, fmt.Sprintf("its value %q is not a host name; write host or host:port, or remove the header to use the URL's host", value))
			}
			host = value
			continue
		}
		h.Set(canon, value)
	}
	return h, host, nil
}

func checkOptions(o Options) error {
	switch {
	case o.Timeout < 0:
		return &ConfigError{Field: "timeout", Value: o.Timeout.String(), Reason: "it is negative; use a positive duration such as 30s, or leave it out for no limit"}
	case o.Retry.MaxAttempts < 0:
		return &ConfigError{Field: "retry.maxAttempts", Value: strconv.Itoa(o.Retry.MaxAttempts), Reason: "it is negative; use 1 or more (the first attempt included)"}
	case o.Retry.Backoff < 0:
		return &ConfigError{Field: "retry.backoff", Value: o.Retry.Backoff.String(), Reason: "it is negative; use a positive duration such as 10s, or leave it out for no pause"}
	case o.Retry.Timeout < 0:
		return &ConfigError{Field: "retry.timeout", Value: o.Retry.Timeout.String(), Reason: "it is negative; use a positive duration such as 1m, or leave it out for no bound"}
	case o.MaxResponse < 0:
		return &ConfigError{Field: "maxResponse", Value: strconv.Itoa(o.MaxResponse), Reason: "it is negative; use a size in bytes, or leave it out for 1 MiB"}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token: the rule of method and
// header names that net/http enforces.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue is net/http's rule: no control characters but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, " \t/?#@\\") {
		return false
	}
	u, err := url.Parse("http://" + h)
	return err == nil && u.Host == h && u.Hostname() != ""
}

// call makes the attempts of one invocation.
func (f *function) call(ctx context.Context, inv Invocation) (json.RawMessage, error) {
	if f.ownIdle {
		// Nothing of a run outlives it; the next run dials again.
		defer f.client.CloseIdleConnections()
	}
	log := f.log.With("function", inv.Function, "instance_id", inv.InstanceID,
		"execution_id", inv.ExecutionID, "fencing_token", inv.FencingToken)
	body := bytes.TrimSpace(inv.Input)
	if len(body) == 0 {
		body = []byte("null")
	}
	attempt := 0
	var out json.RawMessage
	// Each attempt is a client span, a child of ctx's (the run's), with the
	// tracer provider of that span: nothing global is used.
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(orchestrator.TracerName)
	policy := f.opts.Retry.Policy()
	err := policy.Do(ctx, func() error {
		attempt++
		start := time.Now()
		log.Debug("http attempt starting", "method", f.method, "url", f.shownURL, "attempt", attempt)
		actx, span := tracer.Start(ctx, f.method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("http.request.method", f.method), attribute.String("url.full", f.shownURL),
			attribute.Int("http.request.resend_count", attempt-1),
			orchestrator.AttrFunction.String(inv.Function), orchestrator.AttrInstanceID.String(inv.InstanceID),
			orchestrator.AttrExecutionID.String(inv.ExecutionID), orchestrator.AttrFencingToken.Int64(inv.FencingToken),
			orchestrator.AttrAttempt.Int(attempt),
		))
		defer span.End()
		var err error
		if out, err = f.once(actx, inv, body); err == nil {
			log.Debug("http attempt succeeded", "attempt", attempt, "duration", time.Since(start))
		} else {
			orchestrator.RecordFailure(span, orchestrator.DetailsOf(err))
		}
		return err
	}, func(err error) bool { return !retryable(err) }, func(attempt int, err error, wait time.Duration) {
		log.Warn("http attempt failed; retrying", "attempt", attempt, "max_attempts", f.attempts,
			"backoff", wait, "error", err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// retryable: network errors, timeouts, 5xx and 429. Not: other statuses,
// an oversized response.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retryable()
	}
	return !errors.Is(err, ErrResponseTooLarge)
}

// once makes one attempt.
func (f *function) once(ctx context.Context, inv Invocation, body []byte) (json.RawMessage, error) {
	actx := ctx
	if f.opts.Timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeoutCause(ctx, f.opts.Timeout, &fncommon.CauseError{
			Msg: fmt.Sprintf("%s %s timed out after %s", f.method, f.shownURL, f.opts.Timeout), Err: ErrTimeout})
		defer cancel()
	}
	req, err := http.NewRequestWithContext(actx, f.method, f.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", f.method, f.shownURL, err)
	}
	for k, v := range f.header {
		req.Header[k] = append([]string(nil), v...)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	for k, v := range inv.Header() {
		req.Header[k] = v
	}
	// The W3C trace context of the attempt's span (traceparent, and
	// tracestate if any), over a configured one.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if f.host != "" {
		req.Host = f.host
	}

	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failure(ctx, actx, err)
	}
	defer resp.Body.Close()
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, bodyExcerpt+1))
		if actx.Err() != nil {
			return nil, f.failure(ctx, actx, actx.Err())
		}
		return nil, &StatusError{Method: f.method, URL: f.shownURL, StatusCode: resp.StatusCode,
			Status: statusText(resp), Body: clip(excerpt, bodyExcerpt)}
	}
	tooLarge := func() error {
		return &fncommon.CauseError{Err: ErrResponseTooLarge, Msg: fmt.Sprintf(
			"%s %s answered %s with a body of more than %d bytes, the limit; return a reference to large results instead, or raise the limit",
			f.method, f.shownURL, statusText(resp), f.maxResp)}
	}
	if resp.ContentLength > int64(f.maxResp) {
		return nil, tooLarge()
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(f.maxResp)+1))
	if err != nil {
		return nil, f.failure(ctx, actx, fmt.Errorf("reading the response: %w", err))
	}
	if len(b) > f.maxResp {
		return nil, tooLarge()
	}
	return orchestrator.OutputFromBytes(b), nil
}

// failure explains a request that got no complete answer: the run's
// cancellation, the attempt's timeout, or a network error.
func (f *function) failure(ctx, actx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case actx.Err() != nil:
		return context.Cause(actx)
	}
	// *url.Error shows the full URL; show ours instead.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%s %s: %w", f.method, f.shownURL, err)
}

func statusText(resp *http.Response) string {
	if s := strings.TrimSpace(resp.Status); s != "" {
		return s
	}
	return strings.TrimSpace(strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
}

// clip returns the first n bytes of b as valid UTF-8, trimmed, with "..."
// if b was longer.
func clip(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	if cut {
		s += "..."
	}
	return s
}
