package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"
)

// OrchestratorFunc is an orchestration. It returns the instance's output
// (marshalled to JSON) or an error that fails the instance. It must stop
// promptly when ctx.Context() is cancelled: the holder lost the instance, the
// instance was terminated or suspended, or the node is draining.
type OrchestratorFunc func(ctx *OrchestrationContext) (any, error)

// Registry maps orchestration names (and versions) to functions. It is safe
// for concurrent use.
//
// Versions make rolling upgrades safe: an instance records the version it
// started with, and a node runs (campaigns for) only the versions its
// registry has. New code registers its version as the default, for new
// starts, and keeps the old versions registered for as long as instances of
// them may still run; nodes with old code never take an instance started by
// new code, since they do not have its version.
type Registry struct {
	mu            sync.RWMutex
	orchestrators map[string]map[string]OrchestratorFunc // name -> version -> fn
	defaults      map[string]string                      // name -> the version new starts get
	activities    map[string]ActivityFunc
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{orchestrators: map[string]map[string]OrchestratorFunc{}, defaults: map[string]string{},
		activities: map[string]ActivityFunc{}}
}

// ActivityFunc is an activity: ordinary Go code with side effects, called
// by orchestrations through CallActivity. Its ctx carries ActivityInfo
// (instance, execution, fencing token) and is cancelled when the holder
// stops. Activities run at least once: one in flight when its holder dies
// runs again on the next holder, with a larger fencing token.
type ActivityFunc func(ctx context.Context, input json.RawMessage) (any, error)

// Activity adapts a typed function to an ActivityFunc: the input is
// unmarshalled into In.
func Activity[In, Out any](fn func(ctx context.Context, in In) (Out, error)) ActivityFunc {
	return func(ctx context.Context, input json.RawMessage) (any, error) {
		var in In
		if len(input) > 0 && string(input) != "null" {
			if err := json.Unmarshal(input, &in); err != nil {
				return nil, fmt.Errorf("the activity's input is %s, which does not fit the %s it expects", jsonKind(input), goKind(&in))
			}
		}
		return fn(ctx, in)
	}
}

// AddActivity registers an activity under name. Names are unique.
func (r *Registry) AddActivity(name string, fn ActivityFunc) error {
	if name == "" || fn == nil {
		return errors.New("orchestrator: AddActivity needs a name and a function")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.activities[name]; dup {
		return fmt.Errorf("orchestrator: activity %q is registered twice", name)
	}
	r.activities[name] = fn
	return nil
}

// Activity returns the activity registered under name.
func (r *Registry) Activity(name string) (ActivityFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.activities[name]
	return fn, ok
}

// ActivityInfo is what an activity's context carries.
type ActivityInfo struct {
	InstanceID   string
	ExecutionID  string
	FencingToken int64
	Name         string
	TaskID       int
	// Attempt is the attempt this call is, from 1, under a retry policy.
	Attempt int
}

type activityInfoKey struct{}

func withActivityInfo(ctx context.Context, info ActivityInfo) context.Context {
	return context.WithValue(ctx, activityInfoKey{}, info)
}

// ActivityInfoFrom returns the ActivityInfo of an activity's context.
func ActivityInfoFrom(ctx context.Context) (ActivityInfo, bool) {
	info, ok := ctx.Value(activityInfoKey{}).(ActivityInfo)
	return info, ok
}

// AddOrchestrator registers fn under name, as the unversioned version ""
// (the default for new starts unless a versioned one is made the default).
// A name and version is registered once.
func (r *Registry) AddOrchestrator(name string, fn OrchestratorFunc) error {
	return r.AddOrchestratorVersion(name, "", fn, false)
}

// AddOrchestratorVersion registers fn as version of name; with isDefault it
// is the version new starts of name get (ctx.Version() tells the code).
// Register every version this node may still have to run: a node runs only
// instances of versions it has.
func (r *Registry) AddOrchestratorVersion(name, version string, fn OrchestratorFunc, isDefault bool) error {
	if name == "" || fn == nil {
		return errors.New("orchestrator: AddOrchestrator needs a name and a function")
	}
	if len(version) > 64 {
		return fmt.Errorf("orchestrator: version %q of %q is longer than 64 bytes", truncate(version, 70), name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.orchestrators[name]
	if vs == nil {
		vs = map[string]OrchestratorFunc{}
		r.orchestrators[name] = vs
	}
	if _, dup := vs[version]; dup {
		if version == "" {
			return fmt.Errorf("orchestrator: %q is registered twice", name)
		}
		return fmt.Errorf("orchestrator: version %q of %q is registered twice", version, name)
	}
	vs[version] = fn
	if _, has := r.defaults[name]; isDefault || !has {
		r.defaults[name] = version
	}
	return nil
}

// Orchestrator returns the default version of name: the function new
// starts run.
func (r *Registry) Orchestrator(name string) (OrchestratorFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.orchestrators[name][r.defaults[name]]
	return fn, ok
}

// DefaultVersion is the version new starts of name get, and whether name
// is registered at all.
func (r *Registry) DefaultVersion(name string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.defaults[name]
	return v, ok
}

// OrchestratorVersion returns version of name, if this registry has it.
func (r *Registry) OrchestratorVersion(name, version string) (OrchestratorFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.orchestrators[name][version]
	return fn, ok
}

// FunctionKey names a version of an orchestration as node keys list it:
// the name, or name@version.
func FunctionKey(name, version string) string {
	if version == "" {
		return name
	}
	return name + "@" + version
}

// Functions returns every registered orchestration version as FunctionKey
// names it, sorted: what a node can run.
func (r *Registry) Functions() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for name, vs := range r.orchestrators {
		for v := range vs {
			out = append(out, FunctionKey(name, v))
		}
	}
	sort.Strings(out)
	return out
}

// Names returns the registered orchestration names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.orchestrators))
	for n := range r.orchestrators {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// writeTimeout bounds one write of a holder.
const writeTimeout = 5 * time.Second

// OrchestrationContext is what an orchestration sees of its instance.
//
// Orchestrations that call activities, timers or events must be
// deterministic: on replay after a takeover the code runs again from the
// start, and each call must match the history in order. Read time with
// CurrentTime and make IDs with NewGUID; do I/O only in activities. Call
// the context's methods and Await only from the orchestration's goroutine.
type OrchestrationContext struct {
	ctx  context.Context
	exec *Execution
	e    *executor
}

// Context is cancelled when the run must stop; its cause says why.
func (c *OrchestrationContext) Context() context.Context { return c.ctx }

// Name is the orchestration's name.
func (c *OrchestrationContext) Name() string { return c.e.rec.Name }

// InstanceID is the instance's ID.
func (c *OrchestrationContext) InstanceID() string { return c.e.rec.InstanceID }

// Version is the orchestration version the instance started with ("" for
// an unversioned one).
func (c *OrchestrationContext) Version() string { return c.e.rec.Version }

// Tags are the instance's tags, set at its start.
func (c *OrchestrationContext) Tags() map[string]string { return maps.Clone(c.e.rec.Tags) }

// ExecutionID is the ID of this execution of the instance.
func (c *OrchestrationContext) ExecutionID() string { return c.e.rec.ExecutionID }

// FencingToken is the holder's fencing token: it grows with every new holder
// of the instance. Hand it to downstream systems so they can refuse writes
// from an older holder.
func (c *OrchestrationContext) FencingToken() int64 { return c.exec.Token() }

// RawInput is the input as JSON.
func (c *OrchestrationContext) RawInput() json.RawMessage { return c.exec.input }

// GetInput unmarshals the input into v.
func (c *OrchestrationContext) GetInput(v any) error {
	if err := json.Unmarshal(c.exec.input, v); err != nil {
		return fmt.Errorf("orchestrator: the input of '%s' is %s, which does not fit the %s the orchestration reads it into",
			c.e.rec.InstanceID, jsonKind(c.exec.input), goKind(v))
	}
	return nil
}

// SetCustomStatus stores v (as JSON) as the instance's custom status with
// a fenced write. The write is attempted even after Context() is cancelled
// (bounded by writeTimeout): a holder that lost the instance gets ErrFenced.
// On replay it writes nothing: the last value set live is stored already.
func (c *OrchestrationContext) SetCustomStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("orchestrator: custom status: %w", err)
	}
	if b, err = c.exec.c.checkJSON("custom status", b); err != nil {
		return err
	}
	if c.e.replaying {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), writeTimeout)
	defer cancel()
	return c.exec.SetCustomStatus(ctx, b)
}

// IsReplaying reports whether the code is re-running history after a
// takeover (for example to skip logging).
func (c *OrchestrationContext) IsReplaying() bool { return c.e.replaying }

// CurrentTime is the deterministic current time: the time of the history
// event being processed. Use it instead of time.Now.
func (c *OrchestrationContext) CurrentTime() time.Time { return c.e.now }

// NewGUID returns a deterministic unique ID: the same on every replay.
func (c *OrchestrationContext) NewGUID() string { return c.e.newGUID() }

// CallActivity schedules the activity name with input (marshalled to JSON)
// and returns its task. The activity runs after the schedule is committed,
// or, in a batch (RunOptions.BatchBudget), before: then a crash before the
// batch's commit runs it again.
//
// With WithRetry, a failed attempt is retried after a durable timer, each
// attempt a task of its own in the history: the task returned completes
// with the first attempt that succeeds or with the last failure.
func (c *OrchestrationContext) CallActivity(name string, input any, opts ...ActivityOption) *Task {
	probe := &Task{}
	for _, o := range opts {
		o(probe)
	}
	b, err := json.Marshal(input)
	if err == nil {
		b, err = c.exec.c.checkJSON("activity input", b)
	}
	if probe.retry != nil && err == nil {
		outer := &Task{e: c.e, id: -1, kind: kindRetry, name: name, input: b}
		c.e.retried(outer, *probe.retry)
		return outer
	}
	t := c.e.newTask(kindActivity, name)
	t.attempt = 1
	if err != nil {
		// The schedule still goes to history so replay stays aligned.
		t.input = jsonNull
		t.complete(nil, &TaskFailedError{Name: name, Message: "input: " + err.Error(), NonRetriable: true})
		return t
	}
	t.input = b
	return t
}

// CreateTimer returns a durable timer that fires d after CurrentTime. It
// keeps its fire time across takeovers.
func (c *OrchestrationContext) CreateTimer(d time.Duration) *Task {
	t := c.e.newTask(kindTimer, "")
	t.fireAt = c.e.now.Add(d)
	return t
}

// WaitForExternalEvent returns a task that completes with the data of the
// next event called name raised to the instance (events raised earlier are
// buffered, and each is delivered once, in arrival order). With a timeout
// above zero, the task fails with ErrEventTimeout if no event comes in
// time.
func (c *OrchestrationContext) WaitForExternalEvent(name string, timeout time.Duration) *Task {
	e := c.e
	t := &Task{e: e, id: -1, kind: kindEvent, name: name}
	if buf := e.buffered[name]; len(buf) > 0 {
		e.buffered[name] = buf[1:]
		t.complete(buf[0], nil)
		return t
	}
	e.waiters = append(e.waiters, t)
	if timeout > 0 {
		timer := c.CreateTimer(timeout)
		timer.onDone = append(timer.onDone, func() {
			if t.done {
				return
			}
			for i, w := range e.waiters {
				if w == t {
					e.waiters = append(e.waiters[:i:i], e.waiters[i+1:]...)
					break
				}
			}
			t.complete(nil, ErrEventTimeout)
		})
	}
	return t
}

// WhenAny waits until one of tasks is done and returns the first done (in
// argument order).
func (c *OrchestrationContext) WhenAny(tasks ...*Task) *Task {
	if len(tasks) == 0 {
		return nil
	}
	c.e.waitFor(tasks...)
	for _, t := range tasks {
		if t.done {
			return t
		}
	}
	return nil
}

// WhenAll waits until every task is done and returns the first error.
func (c *OrchestrationContext) WhenAll(tasks ...*Task) error {
	var first error
	for _, t := range tasks {
		if err := t.Await(nil); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ContinueAsNew asks for the instance to restart with input and a fresh
// history when the orchestration returns (return right after calling it;
// the return value is ignored). By default events raised and not yet
// received by the code carry over to the new execution, as in
// durabletask-dotnet (TaskOrchestrationContext.ContinueAsNew's
// preserveUnprocessedEvents defaults to true); with
// PreserveUnprocessedEvents(false), the default of Durable Functions'
// in-process IDurableOrchestrationContext.ContinueAsNew, they are dropped.
func (c *OrchestrationContext) ContinueAsNew(input any, opts ...ContinueAsNewOption) {
	b, err := json.Marshal(input)
	if err != nil {
		b = jsonNull
	}
	raw := json.RawMessage(b)
	c.e.continueAs = &raw
	c.e.dropEvents = false
	for _, o := range opts {
		o(c.e)
	}
}

// ContinueAsNewOption configures ContinueAsNew.
type ContinueAsNewOption func(*executor)

// PreserveUnprocessedEvents says whether events raised and not yet received
// by the code carry over to the next execution (true, Soloist's default) or
// are dropped (false).
func PreserveUnprocessedEvents(preserve bool) ContinueAsNewOption {
	return func(e *executor) { e.dropEvents = !preserve }
}
