package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/orchestrator"
)

// BasePath is the root of the instance management routes ({base} in docs/contract.md
// section 3), as in Durable Functions.
const BasePath = "/runtime/webhooks/durabletask"

// ContinuationHeader carries the continuation token of an instance list, in
// the request (the page to read) and in the response (the next page; absent
// on the last page).
const ContinuationHeader = "x-ms-continuation-token"

// retryAfterSeconds is the Retry-After of every 202 that asks the client to
// poll, and of a 503 from a node that takes no starts.
const retryAfterSeconds = "1"

// Config configures the HTTP API handler.
type Config struct {
	// Client performs the operations. Required.
	Client *orchestrator.Client
	// Function looks an orchestration up in the node's registry. With
	// version "" it reports whether name is registered and returns the
	// version new starts of it get (orchestrator.Registry.DefaultVersion);
	// with a version, whether that version of name is registered (and
	// returns it). A start of an unknown name is refused (404, or 400 on
	// the built-in route), and so is one of an unknown version (400).
	// RegistryFunction(reg) is this function of a registry. Required.
	Function func(name, version string) (string, bool)
	// Stopping, if set, is closed when the node begins to shut down: every
	// wait in progress (a start or restart with timeout, a status with
	// waitForCompletion) ends at once with the answer it would give when its
	// time runs out, so that the shutdown does not wait for it.
	Stopping <-chan struct{}
	// Ready returns nil while the node can serve (/readyz 200), an error otherwise (503).
	// Starts and restarts are refused with 503 while Ready returns an error.
	// Defaults to always ready.
	Ready func() error
	// Gatherer is served at /metrics. Required.
	Gatherer prometheus.Gatherer
	// Registerer receives soloist_start_requests_total. Required. If the
	// counter is already registered there (a second handler on the same
	// registry), the registered one is shared.
	Registerer prometheus.Registerer
	// APIKeys, if not empty, are required on every route but /livez, /readyz, /healthz.
	// A key must not be empty nor contain white space or control characters.
	APIKeys []string
	// MaxPayload limits request bodies in bytes. Defaults to
	// Client.MaxPayload() (orchestrator.DefaultMaxPayload unless the client
	// was configured otherwise).
	MaxPayload int
	// PublicURL, if set, is the base of the absolute URLs in answers
	// (Location, statusQueryGetUri, ...): the scheme and host clients reach
	// the node at, and a path prefix if a proxy adds one, e.g.
	// "https://soloist.example.com". Defaults to the request's scheme and
	// Host header (and X-Forwarded-Proto).
	PublicURL string
	// OmitCodeInURLs leaves a ?code= API key out of the URLs in answers.
	// By default a request authenticated with ?code= gets URLs that carry
	// it, as Durable Functions does, so that they work as they are.
	OmitCodeInURLs bool
	// OperationTimeout bounds the etcd work of one request that writes
	// (start, terminate, raise, purge, ...) and the history of a status read;
	// a request that runs out of it gets 503. Defaults to 10s.
	OperationTimeout time.Duration
	// ReadTimeout bounds the first etcd read of a status or list request, so
	// that reads fail fast (503) while etcd does not answer. Defaults to 3s.
	ReadTimeout time.Duration
	// EtcdEndpoints, if set, are named in the message of a 503 for a store
	// that did not answer, so that whoever reads it knows what to check.
	EtcdEndpoints []string
	// StoreUnreachable, if set, is called (from the request's goroutine) when
	// a request fails because etcd did not answer in time; serve uses it to
	// start checking etcd at once.
	StoreUnreachable func(error)
	// StoreRefused, if set, is called (from the request's goroutine) when a
	// request fails because etcd refused a write for want of space
	// (NOSPACE); serve passes scheduler.Node.ObserveStoreError, so the node
	// turns unready at once rather than at its next alarm poll.
	StoreRefused func(error)
	// HealthOnly serves /livez, /readyz, /healthz and /metrics only: every
	// other route gets 404 with HealthOnlyMessage. It is the HTTP side of a
	// node that runs instances and serves no API (scheduler.RoleRunner).
	HealthOnly bool
	// HealthOnlyMessage is the error of those 404s. Defaults to a message
	// that says the node runs instances only and where to send starts.
	HealthOnlyMessage string
	// Start, if set, performs the starts of the start routes in place of
	// Client.Start; serve passes scheduler.Node.StartInstance, which takes
	// the instance in the start's own transaction when the node should run
	// it ("start where you land"). It must answer as Client.Start does.
	Start func(ctx context.Context, name string, opts orchestrator.StartOptions) (*orchestrator.StartResult, error)
	// Nodes, if set, lists the cluster's live nodes (their node keys):
	// GET {BasePath}/nodes answers them. serve passes
	// scheduler.Node.Nodes (sorted by node ID). Without it the route is
	// not served.
	Nodes func(ctx context.Context) ([]orchestrator.NodeInfo, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// RegistryFunction is Config.Function of a registry: name's default
// version for version "", else whether version of name is registered.
func RegistryFunction(reg *orchestrator.Registry) func(name, version string) (string, bool) {
	return func(name, version string) (string, bool) {
		if version == "" {
			return reg.DefaultVersion(name)
		}
		_, ok := reg.OrchestratorVersion(name, version)
		return version, ok
	}
}

// handler serves every route of docs/contract.md section 3.
type handler struct {
	client      *orchestrator.Client
	startFn     func(ctx context.Context, name string, opts orchestrator.StartOptions) (*orchestrator.StartResult, error)
	nodes       func(ctx context.Context) ([]orchestrator.NodeInfo, error)
	function    func(name, version string) (string, bool)
	stopping    <-chan struct{}
	ready       func() error
	keys        [][sha256.Size]byte
	publicURL   string // without a trailing slash
	omitCode    bool
	maxPayload  int
	timeout     time.Duration
	readTimeout time.Duration
	endpoints   string // comma-separated, for 503 messages; "" if unknown
	unreachable func(error)
	refused     func(error)
	healthOnly  string // the 404 message of a health-only handler; "" serves every route
	log         *slog.Logger
	metrics     *metrics
	mux         *http.ServeMux
}

// DefaultHealthOnlyMessage is the 404 message of a HealthOnly handler.
const DefaultHealthOnlyMessage = "this node runs instances only (role runner) and serves no API besides /livez, /readyz, /healthz and /metrics; " +
	"send starts and every other API request to a node of role all or api"

// unmatchedRoute is the route label of requests that match no route.
const unmatchedRoute = "unmatched"

// New returns the handler of every route of docs/contract.md section 3. It returns an
// error if a required field is missing, an API key is unusable, or the
// metric cannot be registered.
func New(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("httpapi: Config.Client is required")
	case cfg.Function == nil:
		return nil, errors.New("httpapi: Config.Function is required (RegistryFunction(registry) makes it)")
	case cfg.Gatherer == nil:
		return nil, errors.New("httpapi: Config.Gatherer is required")
	case cfg.Registerer == nil:
		return nil, errors.New("httpapi: Config.Registerer is required")
	case cfg.MaxPayload < 0:
		return nil, fmt.Errorf("httpapi: Config.MaxPayload is %d; use a positive size in bytes, or 0 for the default", cfg.MaxPayload)
	case cfg.PublicURL != "" && !validPublicURL(cfg.PublicURL):
		return nil, fmt.Errorf("httpapi: Config.PublicURL %q is not an absolute http or https URL without query or fragment, e.g. https://soloist.example.com", cfg.PublicURL)
	case cfg.OperationTimeout < 0:
		return nil, fmt.Errorf("httpapi: Config.OperationTimeout is %s; use a positive duration, or 0 for the default", cfg.OperationTimeout)
	case cfg.ReadTimeout < 0:
		return nil, fmt.Errorf("httpapi: Config.ReadTimeout is %s; use a positive duration, or 0 for the default", cfg.ReadTimeout)
	}
	h := &handler{
		client:      cfg.Client,
		startFn:     cfg.Start,
		nodes:       cfg.Nodes,
		function:    cfg.Function,
		stopping:    cfg.Stopping,
		ready:       cfg.Ready,
		maxPayload:  cfg.MaxPayload,
		timeout:     cfg.OperationTimeout,
		readTimeout: cfg.ReadTimeout,
		endpoints:   strings.Join(cfg.EtcdEndpoints, ","),
		unreachable: cfg.StoreUnreachable,
		refused:     cfg.StoreRefused,
		log:         cfg.Logger,
		publicURL:   strings.TrimRight(cfg.PublicURL, "/"),
		omitCode:    cfg.OmitCodeInURLs,
	}
	if h.ready == nil {
		h.ready = func() error { return nil }
	}
	if h.maxPayload == 0 {
		h.maxPayload = cfg.Client.MaxPayload()
	}
	if h.timeout == 0 {
		h.timeout = 10 * time.Second
	}
	if h.readTimeout == 0 {
		h.readTimeout = 3 * time.Second
	}
	if cfg.HealthOnly {
		h.healthOnly = cfg.HealthOnlyMessage
		if h.healthOnly == "" {
			h.healthOnly = DefaultHealthOnlyMessage
		}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	for i, k := range cfg.APIKeys {
		if k == "" {
			return nil, fmt.Errorf("httpapi: API key %d is empty; remove it (an empty key would let every request in)", i+1)
		}
		if strings.IndexFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return nil, fmt.Errorf("httpapi: API key %d contains white space or a control character, which a client cannot send in a header; remove it", i+1)
		}
		h.keys = append(h.keys, sha256.Sum256([]byte(k)))
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h.metrics = m

	mux := http.NewServeMux()
	if h.healthOnly == "" {
		mux.HandleFunc("POST /api/orchestrators/{functionName}", h.startGenerated)
		// {instanceId...} also takes an empty or slashed remainder, so that such
		// an ID gets a 400 that says what is wrong rather than a routing 404.
		mux.HandleFunc("POST /api/orchestrators/{functionName}/{instanceId...}", h.startWithID)
		mux.HandleFunc("POST "+BasePath+"/orchestrators/{functionName}", h.builtinStartGenerated)
		mux.HandleFunc("POST "+BasePath+"/orchestrators/{functionName}/{instanceId...}", h.builtinStartWithID)
		mux.HandleFunc("GET "+BasePath+"/instances", h.list)
		mux.HandleFunc("GET "+BasePath+"/instances/{id}", h.status)
		mux.HandleFunc("DELETE "+BasePath+"/instances/{id}", h.purge)
		mux.HandleFunc("DELETE "+BasePath+"/instances", h.purgeMany)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/terminate", h.terminate)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/suspend", h.suspend)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/resume", h.resume)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/restart", h.restart)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/rewind", h.rewind)
		mux.HandleFunc("POST "+BasePath+"/instances/{id}/raiseEvent/{eventName}", h.raiseEvent)
		if h.nodes != nil {
			mux.HandleFunc("GET "+BasePath+"/nodes", h.listNodes)
		}
		mux.HandleFunc(BasePath+"/entities", h.entities)
		mux.HandleFunc(BasePath+"/entities/", h.entities)
	}
	mux.HandleFunc("GET /livez", h.livez)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /healthz", h.readyz)
	mux.Handle("GET /metrics", MetricsHandler(cfg.Gatherer, h.log))
	h.mux = mux
	return h, nil
}

// ServeHTTP counts and times the request, recovers panics, checks the API
// key and routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	// The route label is the mux pattern, never the path: no instance ID
	// or other caller's string reaches a label.
	_, route := h.mux.Handler(r)
	if route == "" {
		route = unmatchedRoute
	}
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	defer func() { h.metrics.request(route, sw.code, time.Since(began)) }()
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.Error("panic while serving a request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeError(w, http.StatusInternalServerError, "internal error; the details are in the server log")
		}
	}()
	if !openPath(r.URL.Path) && !h.authorized(r) {
		h.unauthorized(w)
		return
	}
	h.route(w, r)
}

// unauthorized answers 401 without reading the body, and closes the
// connection at once: net/http would otherwise wait for the body, before
// the answer to keep the connection, or after it (until the read deadline)
// to drain it.
func (h *handler) unauthorized(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	w.Header().Set("WWW-Authenticate", `Bearer realm="soloist"`)
	writeError(w, http.StatusUnauthorized, "missing or invalid API key: send it as 'Authorization: Bearer <key>', as the 'x-functions-key' header, or as the query parameter code=<key>")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now()) // not supported by every ResponseWriter: then the server's own deadline
}

// route serves r with the mux, answering unknown routes and wrong methods
// with JSON errors instead of the mux's plain text.
func (h *handler) route(w http.ResponseWriter, r *http.Request) {
	fallback, pattern := h.mux.Handler(r)
	if pattern != "" {
		h.mux.ServeHTTP(w, r) // sets the path values that Handler does not
		return
	}
	p := &probe{header: http.Header{}}
	fallback.ServeHTTP(p, r)
	switch p.code {
	case http.StatusNotFound:
		if h.healthOnly != "" {
			writeError(w, http.StatusNotFound, h.healthOnly)
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf(
			"no route for %s %s; the API serves POST /api/orchestrators/{functionName}[/{instanceId}], POST %s/orchestrators/{functionName}[/{instanceId}], "+
				"%s/instances[/{instanceId}[/terminate|suspend|resume|rewind|restart|raiseEvent/{eventName}]], /livez, /readyz, /healthz and /metrics",
			r.Method, truncate(r.URL.Path, 200), BasePath, BasePath))
	case http.StatusMethodNotAllowed:
		allow := p.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf(
			"method %s is not allowed on %s; use %s", r.Method, truncate(r.URL.Path, 200), allow))
	default: // a redirect to the clean path: the mux does it
		h.mux.ServeHTTP(w, r)
	}
}

// statusWriter records the status code of an answer, for the request
// metrics. Unwrap keeps http.ResponseController working through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets promhttp and other streaming writers flush through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.code == 0 {
			w.code = http.StatusOK
		}
		f.Flush()
	}
}

// probe records what the mux's fallback handler would answer.
type probe struct {
	header http.Header
	code   int
}

func (p *probe) Header() http.Header { return p.header }
func (p *probe) WriteHeader(code int) {
	if p.code == 0 {
		p.code = code
	}
}
func (p *probe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// openPath reports whether path is served without an API key.
func openPath(path string) bool {
	switch path {
	case "/livez", "/readyz", "/healthz":
		return true
	}
	return false
}

// authorized reports whether r carries a valid API key in one of the three
// accepted places, or no keys are configured.
func (h *handler) authorized(r *http.Request) bool {
	if len(h.keys) == 0 {
		return true
	}
	if scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if h.validKey(strings.TrimSpace(token)) {
			return true
		}
	}
	if h.validKey(r.Header.Get("x-functions-key")) {
		return true
	}
	return h.validKey(r.URL.Query().Get("code"))
}

// validKey compares the SHA-256 of k with every key's in constant time, so
// neither the key nor its length leaks through timing.
func (h *handler) validKey(k string) bool {
	if k == "" || len(h.keys) == 0 {
		return false
	}
	sum := sha256.Sum256([]byte(k))
	match := 0
	for i := range h.keys {
		match |= subtle.ConstantTimeCompare(sum[:], h.keys[i][:])
	}
	return match == 1
}

// opContext bounds the etcd work of a request.
func (h *handler) opContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.timeout)
}

// readContext bounds the first etcd read of a read request: short, so that
// reads fail fast while etcd does not answer.
func (h *handler) readContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.readTimeout)
}

// etcdDidNotAnswer reports whether err means etcd did not answer in time
// (a deadline, or gRPC's Unavailable), rather than a refusal or a lost race.
// An outcome-unknown error of the orchestrator carries its cause as text
// only, so an ErrUnavailable whose text names a deadline counts too.
func etcdDidNotAnswer(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if s, ok := status.FromError(err); ok && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded) {
		return true
	}
	msg := err.Error()
	return errors.Is(err, orchestrator.ErrUnavailable) &&
		(strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "code = Unavailable") || strings.Contains(msg, "code = DeadlineExceeded"))
}

// fail writes the JSON error of err with its status code. A 500 is logged
// at error level and its message is not sent: it may describe internals.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := StatusCode(err)
	msg := publicMessage(err)
	switch {
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		h.log.Debug("request abandoned by the client", "method", r.Method, "path", r.URL.Path, "error", err)
	case code == http.StatusInsufficientStorage:
		h.log.Warn("request failed: etcd is out of space", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", retryAfterSeconds)
		msg = noSpaceMessage(msg)
		if h.refused != nil {
			h.refused(err)
		}
	case errors.Is(err, orchestrator.ErrStoreDenied):
		h.log.Error("request failed: etcd denied the node's user", "method", r.Method, "path", r.URL.Path, "error", err)
		msg = deniedHelp + " (" + msg + ")"
	case code >= http.StatusInternalServerError && code != http.StatusServiceUnavailable:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		msg = "internal error; the details are in the server log"
	case code == http.StatusServiceUnavailable:
		h.log.Warn("request failed: store unavailable", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", retryAfterSeconds)
		if etcdDidNotAnswer(err) {
			if h.endpoints != "" {
				msg = "etcd at " + h.endpoints + " did not answer in time (" + msg + ")"
			}
			if h.unreachable != nil {
				h.unreachable(err)
			}
		}
		if !strings.Contains(msg, "try again") && !strings.Contains(msg, "retry") {
			msg += "; retry later"
		}
	default:
		h.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", code, "error", err)
	}
	writeError(w, code, msg)
}

// notTaking answers a start or restart (what) that the node cannot take
// now, because Ready returned err: 507 while etcd has its NOSPACE alarm
// (no node can take it until an operator frees space), else 503 (another
// node may). It returns the code.
func (h *handler) notTaking(w http.ResponseWriter, what string, err error) int {
	w.Header().Set("Retry-After", retryAfterSeconds)
	if errors.Is(err, orchestrator.ErrNoSpace) {
		writeError(w, http.StatusInsufficientStorage, noSpaceMessage(fmt.Sprintf("this node is not taking starts: %v", err)))
		return http.StatusInsufficientStorage
	}
	writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
		"this node is not taking starts (%v); retry later or send the %s to another node", err, what))
	return http.StatusServiceUnavailable
}

// entities answers the entity routes of Durable Functions: Soloist has no
// durable entities.
func (h *handler) entities(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "Soloist has no durable entities, so it serves none of the "+BasePath+
		"/entities routes; keep such state in an orchestration (custom status, external events) or in your own store")
}

// livez answers 200 while the process serves; it never checks etcd.
func (h *handler) livez(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 while Ready returns nil, else 503 with its error.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if err := h.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// MetricsHandler serves g in the Prometheus text format, as /metrics does.
// Errors are logged to log: at error level, except a client that went away
// in the middle of the answer, which is logged at debug level.
func MetricsHandler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// promLogger sends promhttp's errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	msg := strings.TrimSpace(fmt.Sprintln(v...))
	for _, a := range v {
		if err, ok := a.(error); ok && clientGone(err) {
			l.log.Debug("serving /metrics: the client went away", "error", msg)
			return
		}
	}
	l.log.Error("serving /metrics", "error", msg)
}

// clientGone reports whether err is a write to a client that hung up or
// whose deadline passed.
func clientGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, http.ErrHandlerTimeout)
}

// validPublicURL reports whether s can be the base of the URLs in answers.
func validPublicURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

// listNodes answers the live nodes' keys, a JSON array in Config.Nodes's
// order.
func (h *handler) listNodes(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.query(w, r); !ok {
		return
	}
	ctx, cancel := h.readContext(r)
	defer cancel()
	nodes, err := h.nodes(ctx)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if nodes == nil {
		nodes = []orchestrator.NodeInfo{}
	}
	writeJSON(w, http.StatusOK, nodes)
}
