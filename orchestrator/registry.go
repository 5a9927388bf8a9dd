package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"
)

// OrchestratorFunc is an orchestration. It returns the instance's output
// (marshalled to JSON) or an error that fails the instance. It must stop
// promptly when ctx.Context() is cancelled: the holder lost the instance, the
// instance was terminated or suspended, or the node is draining.
type OrchestratorFunc func(ctx *OrchestrationContext) (any, error)

// Registry maps orchestration names to functions. It is safe for concurrent use.
type Registry struct {
	mu            sync.RWMutex
	orchestrators map[string]OrchestratorFunc
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{orchestrators: map[string]OrchestratorFunc{}}
}

// AddOrchestrator registers fn under name. Names are unique.
func (r *Registry) AddOrchestrator(name string, fn OrchestratorFunc) error {
	if name == "" || fn == nil {
		return errors.New("orchestrator: AddOrchestrator needs a name and a function")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.orchestrators[name]; dup {
		return fmt.Errorf("orchestrator: %q is registered twice", name)
	}
	r.orchestrators[name] = fn
	return nil
}

// Orchestrator returns the function registered under name.
func (r *Registry) Orchestrator(name string) (OrchestratorFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.orchestrators[name]
	return fn, ok
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
type OrchestrationContext struct {
	ctx  context.Context
	exec *Execution
	rec  *Status
}

// Context is cancelled when the run must stop; its cause says why.
func (c *OrchestrationContext) Context() context.Context { return c.ctx }

// Name is the orchestration's name.
func (c *OrchestrationContext) Name() string { return c.rec.Name }

// InstanceID is the instance's ID.
func (c *OrchestrationContext) InstanceID() string { return c.rec.InstanceID }

// ExecutionID is the ID of this execution of the instance.
func (c *OrchestrationContext) ExecutionID() string { return c.rec.ExecutionID }

// FencingToken is the holder's fencing token: it grows with every new holder
// of the instance. Hand it to downstream systems so they can refuse writes
// from an older holder.
func (c *OrchestrationContext) FencingToken() int64 { return c.exec.Token() }

// RawInput is the input as JSON.
func (c *OrchestrationContext) RawInput() json.RawMessage { return c.rec.Input }

// GetInput unmarshals the input into v.
func (c *OrchestrationContext) GetInput(v any) error {
	if err := json.Unmarshal(c.rec.Input, v); err != nil {
		return fmt.Errorf("orchestrator: input of '%s' does not fit %T: %w", c.rec.InstanceID, v, err)
	}
	return nil
}

// SetCustomStatus stores v (as JSON) in the instance's customStatus with a
// fenced write. The write is attempted even after Context() is cancelled
// (bounded by writeTimeout): a holder that lost the instance gets ErrFenced.
func (c *OrchestrationContext) SetCustomStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("orchestrator: custom status: %w", err)
	}
	if b, err = c.exec.c.checkJSON("custom status", b); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), writeTimeout)
	defer cancel()
	return c.exec.Update(ctx, func(s *Status) { s.CustomStatus = b })
}

// Run executes fn for the execution under ctx: it marks the record Running,
// calls fn, and writes Completed or Failed with the owners key's release in
// one fenced transaction. If ctx ends first, Run writes nothing and returns
// context.Cause(ctx): the run stopped without a result and may run again on
// the next holder. A panic in fn fails the instance.
func Run(ctx context.Context, exec *Execution, fn OrchestratorFunc) error {
	if st := exec.Status().RuntimeStatus; st != StatusRunning {
		if err := exec.MarkRunning(ctx); err != nil {
			return err
		}
	}
	octx := &OrchestrationContext{ctx: ctx, exec: exec, rec: exec.Status()}
	out, runErr := call(fn, octx)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var output json.RawMessage
	if runErr == nil {
		b, err := json.Marshal(out)
		if err == nil {
			output, err = exec.c.checkJSON("output", b)
		}
		if err != nil {
			runErr = fmt.Errorf("output: %w", err)
		}
	}
	// The result is computed: retry its write through store hiccups rather
	// than let the next holder run the orchestration again.
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := exec.Finish(wctx, output, runErr)
		cancel()
		if err == nil || !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(backoff):
		}
	}
}

func call(fn OrchestratorFunc, octx *OrchestrationContext) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("orchestration panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return fn(octx)
}
