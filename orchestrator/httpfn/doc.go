// Package httpfn calls an HTTP endpoint as a Soloist orchestration: the
// "http" functions of the config file (docs/contract.md section 6).
//
// # Contract
//
// Each attempt sends one request to Spec.URL with Spec.Method (POST by
// default). The body is the instance input JSON (null if the instance has
// none) with Content-Type: application/json, and these headers:
//
//	Soloist-Instance-Id     the instance ID
//	Soloist-Execution-Id    the execution ID (new with every start or restart)
//	Soloist-Fencing-Token   the holder's fencing token (decimal)
//	Soloist-Function        the orchestration name
//	traceparent, tracestate the W3C trace context of the attempt's span,
//	                        when the run has one (over a configured header)
//
// Each attempt is an OpenTelemetry client span named by the method, a
// child of the run's span in the context of the call, made with that
// span's provider (no global one).
//
// Spec.Headers are added to every request. They may set Content-Type,
// User-Agent (soloist-httpfn by default), Authorization and any other
// header, and Host to send a Host different from the URL's; New rejects
// names that are not valid HTTP tokens, values with control characters,
// names that differ only in case, headers the HTTP client manages itself
// (Content-Length, Transfer-Encoding, Connection and the other hop-by-hop
// headers), and any name starting with "Soloist-": the contract's headers
// cannot be overridden.
//
// A 2xx response completes the instance with the response body as its
// output: the JSON value if the body parses as JSON (whatever its
// Content-Type), else the body as a JSON string (trailing newlines
// removed); an empty body gives null. A body larger than Options.MaxResponse
// (1 MiB by default) fails the attempt with ErrResponseTooLarge, without
// retry; return a reference to large results instead. The orchestrator's own
// payload limit (--max-payload) applies to the output after that.
//
// Any other status fails the attempt with a *StatusError naming the method,
// the URL, the status and the first 4 KiB of the response body. URLs in
// errors and logs have their password and query hidden, since those often
// carry credentials.
//
// # Timeouts and retries
//
// Options.Timeout bounds each attempt, from sending the request to reading
// the whole response (0: no limit beyond the run's own cancellation).
// Options.Retry repeats the request, after a constant pause, when an
// attempt fails with a network error, a timeout, a 5xx status or 429 Too
// Many Requests; Retry-After is not read. Any other 4xx is final: the
// request is wrong and sending it again would not help. Retry.Timeout (if
// set) bounds the retries: no attempt starts later than that after the
// first began. Retries stop at once when the run's context is cancelled. Every attempt of a run carries
// the same Soloist-* headers, so a receiver can tell a retry from a new run
// by Soloist-Execution-Id.
//
// # Cancellation
//
// The request is made with the run's context. When it is cancelled - the
// node lost the instance's lease, the instance was terminated or suspended,
// or the node is draining - the request in flight is aborted at once: the
// connection is closed (HTTP/1.x) or the stream reset (HTTP/2), which a Go
// server sees as its request context being cancelled (over HTTP/1.x, once
// the handler has read the request body). The run then returns
// the context's cause and writes nothing; the attempt is not retried. The
// receiver may already have acted on the request: cancellation stops
// waiting for it, it does not undo it.
//
// # Guarantees, and what is not guaranteed
//
// Soloist runs at most one holder of an instance at a time in the sense of
// docs/contract.md section 5: a holder that loses its lease aborts its request before a
// new holder can start, absent process pauses. It does not make the
// request's effects exactly-once: delivery is at-least-once. If the
// holder's node dies or loses its lease while the request is in flight, or
// after the receiver acted but before its answer was recorded, the new
// holder sends the request again, with the same instance and execution IDs
// and a larger Soloist-Fencing-Token. A network error or timeout can also
// hide a request the receiver did process, and a retry then sends it again.
// Receivers should be idempotent, keyed by Soloist-Instance-Id and
// Soloist-Execution-Id, and should remember the largest fencing token seen
// per instance and refuse requests (and writes) carrying a smaller one: those
// come from a holder that has been replaced.
//
// # Redirects
//
// The default redirect policy of net/http applies: up to 10 redirects are
// followed, to any host. 301, 302 and 303 turn a POST (or any method other
// than GET and HEAD) into a GET without body; 307 and 308 send the method
// and body again. On a redirect to another domain (not a subdomain of the
// URL's host) Authorization, Cookie and Proxy-Authorization are dropped,
// but every other configured header, the Soloist-* headers and, for 307 and
// 308, the input go along. Point the URL at the final location, and carry
// credentials in Authorization rather than in custom headers. To refuse
// redirects, pass an Options.Client whose CheckRedirect returns
// http.ErrUseLastResponse: a 3xx answer then fails the attempt without
// retry.
//
// # The HTTP client
//
// Without Options.Client every function built by New gets a client and
// transport of its own (nothing is shared with http.DefaultClient): connect
// timeout 30s, TLS handshake timeout 10s, TCP keep-alive every 30s so a dead
// peer is noticed, proxies from HTTPS_PROXY, HTTP_PROXY and NO_PROXY, HTTP/2
// when the server offers it, and no deadline of its own (Options.Timeout is
// the deadline, so a long-running endpoint is not cut off). Idle
// connections are closed when a run ends: nothing of a run outlives it.
// Pass Options.Client for custom TLS (a private CA, client certificates) or
// another redirect policy; its own Timeout, if set, applies on top of
// Options.Timeout, and its connections are left to its owner.
package httpfn
