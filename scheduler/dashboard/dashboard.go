package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

//go:embed assets
var assets embed.FS

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

// Config configures the dashboard.
type Config struct {
	// Node is the node that serves it: its view of the cluster and its
	// watch. Required.
	Node *scheduler.Node
	// Client reads instances and their history. Defaults to Node.Client().
	Client *orchestrator.Client
	// API is the node's HTTP API handler (httpapi.New): every action of
	// the dashboard is sent through it, so it is checked, answered and
	// counted as the same API call would be. Required.
	API http.Handler
	// APIBase is the API's instance route root. Defaults to
	// "/runtime/webhooks/durabletask".
	APIBase string
	// APIKeys, if not empty, are required on everything but the login shell.
	APIKeys []string
	// ReadOnly hides every action and refuses the action routes (403).
	ReadOnly bool
	// Workers, if set, lists the gRPC workers connected to this node (the
	// cluster page's "gRPC workers" panel); nil says the node has no gRPC
	// listener.
	Workers Workers
	// Stopping, if set, is closed when the node begins to shut down: every
	// open event stream ends then, so that it does not hold the shutdown.
	Stopping <-chan struct{}
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Dashboard serves /ui/. Start it to record ownership history; Stop ends that.
type Dashboard struct {
	cfg   Config
	log   *slog.Logger
	keys  [][sha256.Size]byte
	tmpl  *template.Template
	mux   *http.ServeMux
	own   *ownership
	ttl   ttlCache
	mu    sync.Mutex
	stop  func()
	shell []byte
}

// New validates cfg and returns the dashboard.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Node == nil {
		return nil, errors.New("dashboard: Config.Node is required")
	}
	if cfg.API == nil {
		return nil, errors.New("dashboard: Config.API is required (the httpapi handler)")
	}
	if cfg.Client == nil {
		cfg.Client = cfg.Node.Client()
	}
	if cfg.APIBase == "" {
		cfg.APIBase = "/runtime/webhooks/durabletask"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dashboard{cfg: cfg, log: cfg.Logger, own: newOwnership()}
	for i, k := range cfg.APIKeys {
		if k == "" || strings.ContainsAny(k, " \t\r\n") {
			return nil, errors.New("dashboard: API key " + itoa(i+1) + " is empty or contains white space")
		}
		d.keys = append(d.keys, sha256.Sum256([]byte(k)))
	}
	t, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.tmpl")
	if err != nil {
		return nil, err
	}
	d.tmpl = t
	shell, err := assets.ReadFile("assets/shell.html")
	if err != nil {
		return nil, err
	}
	auth := "0"
	if len(d.keys) > 0 {
		auth = "1"
	}
	d.shell = []byte(strings.Replace(string(shell), "{{AUTH}}", auth, 1))
	m := http.NewServeMux()
	for _, p := range []string{"GET /ui/{$}", "GET /ui/instances", "GET /ui/instances/{id}", "GET /ui/cluster", "GET /ui/schedules"} {
		m.HandleFunc(p, d.serveShell)
	}
	m.HandleFunc("GET /ui/assets/{name}", d.key(d.serveAsset))
	m.HandleFunc("GET /ui/f/instances", d.key(d.fragInstances))
	m.HandleFunc("GET /ui/f/instance", d.key(d.fragInstance))
	m.HandleFunc("GET /ui/f/cluster", d.key(d.fragCluster))
	m.HandleFunc("GET /ui/f/schedules", d.key(d.fragSchedules))
	m.HandleFunc("GET /ui/api/stream", d.key(d.stream))
	m.HandleFunc("POST /ui/api/instances/{id}/{action}", d.key(d.action))
	m.HandleFunc("POST /ui/api/bulk", d.key(d.bulk))
	m.HandleFunc("/ui/", d.key(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no dashboard route "+r.Method+" "+r.URL.Path+"; pages are /ui/, /ui/instances, /ui/instances/{id}, /ui/cluster, /ui/schedules")
	}))
	d.mux = m
	return d, nil
}

// Start records the ownership changes the node's watch sees (the
// instance page's ownership history, the cluster page's takeovers) until
// Stop. It starts no goroutine and never fails.
func (d *Dashboard) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop == nil {
		d.stop = d.cfg.Node.OnChange(d.own.record)
	}
	return nil
}

// Stop ends Start's recording; it is idempotent.
func (d *Dashboard) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		d.stop()
	}
}

// ServeHTTP serves the dashboard's routes; anything not under /ui/ is 404.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	d.mux.ServeHTTP(w, r)
}

// serveShell serves the login shell: no data, no key needed. It loads
// the rest with the key from session storage.
func (d *Dashboard) serveShell(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(d.shell)
}

func (d *Dashboard) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var ctype string
	switch name {
	case "app.js":
		ctype = "text/javascript; charset=utf-8"
	case "app.css":
		ctype = "text/css; charset=utf-8"
	default:
		writeError(w, http.StatusNotFound, "no asset "+name)
		return
	}
	b, err := assets.ReadFile("assets/" + name)
	if err != nil {
		writeError(w, http.StatusNotFound, "no asset "+name)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// key wraps h with the API key check: the same keys and headers as the API
// (Authorization: Bearer, x-functions-key). A ?code= key is refused here:
// the dashboard never carries a key in a URL.
func (d *Dashboard) key(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="soloist"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid API key: sign in on the dashboard's login form (the key goes in the Authorization header, never in a URL)")
			return
		}
		h(w, r)
	}
}

func (d *Dashboard) authorized(r *http.Request) bool {
	if len(d.keys) == 0 {
		return true
	}
	k := r.Header.Get("x-functions-key")
	if scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		k = strings.TrimSpace(token)
	}
	if k == "" {
		return false
	}
	sum := sha256.Sum256([]byte(k))
	match := 0
	for i := range d.keys {
		match |= subtle.ConstantTimeCompare(sum[:], d.keys[i][:])
	}
	return match == 1
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ttlCache keeps lease times to live for a second, so that a page of rows
// held by three nodes asks etcd three times at most.
type ttlCache struct {
	mu sync.Mutex
	m  map[string]ttlEntry
}

type ttlEntry struct {
	at   time.Time
	left time.Duration
	err  error
}

func (c *ttlCache) get(ctx context.Context, n *scheduler.Node, id string) (time.Duration, error) {
	if id == "" {
		return 0, errors.New("no lease")
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]ttlEntry{}
	}
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && time.Since(e.at) < time.Second {
		return e.left, e.err
	}
	left, _, err := n.LeaseTimeToLive(ctx, id)
	c.mu.Lock()
	if len(c.m) > 1000 {
		c.m = map[string]ttlEntry{}
	}
	c.m[id] = ttlEntry{at: time.Now(), left: left, err: err}
	c.mu.Unlock()
	return left, err
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
