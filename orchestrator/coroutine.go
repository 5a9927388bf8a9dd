package orchestrator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"
)

// abortSignal unwinds an orchestration goroutine blocked in Await when its
// run ends (or parks).
type abortSignal struct{}

// markRunningAfter is how long fresh code may run before the executor
// marks the record Running on its own rather than with the first step's
// commit (code that blocks, such as an exec function, shows Running at once).
const markRunningAfter = 50 * time.Millisecond

// The coroutine.

func (e *executor) startCoroutine() {
	if e.started {
		return
	}
	e.started = true
	e.resume, e.yielded = make(chan bool), make(chan struct{})
	go func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(abortSignal); !ok {
					e.outErr = &panicError{what: "orchestration", value: fmt.Sprint(r), stack: string(debug.Stack())}
					e.finished = true
				}
			} else {
				e.finished = true
			}
			e.yielded <- struct{}{}
		}()
		if !<-e.resume {
			panic(abortSignal{})
		}
		e.output, e.outErr = e.fn(e.octx)
	}()
	e.step()
}

// step lets the orchestration run until it waits or returns. Fresh code
// that runs for a while without waiting gets its record marked Running
// meanwhile.
func (e *executor) step() {
	e.blocked = false
	e.resume <- true
	if e.needMark && !e.replaying {
		t := time.NewTimer(markRunningAfter)
		select {
		case <-e.yielded:
			t.Stop()
			e.afterStep()
			return
		case <-t.C:
			// The orchestration goroutine touches neither pending nor
			// history; the commit runs beside it.
			if err := e.commit(); err != nil && e.ctx.Err() == nil {
				e.log.Debug("marking the record Running failed; the next step does it", e.logArgs("error", err)...)
			}
		}
	}
	<-e.yielded
	e.afterStep()
}

func (e *executor) afterStep() {
	if !e.finished {
		e.blocked = true
	}
}

// wake resumes the orchestration if what it waits for is done.
func (e *executor) wake() {
	if !e.blocked {
		return
	}
	for _, t := range e.waiting {
		if t.done {
			e.step()
			return
		}
	}
}

// abort unwinds a blocked orchestration goroutine.
func (e *executor) abort() {
	if e.blocked {
		e.blocked = false
		e.resume <- false
		<-e.yielded
	}
}

// waitFor runs on the orchestration goroutine: it parks until one of ts is
// done.
func (e *executor) waitFor(ts ...*Task) {
	for {
		for _, t := range ts {
			if t.done {
				return
			}
		}
		e.waiting = ts
		e.yielded <- struct{}{}
		if !<-e.resume {
			panic(abortSignal{})
		}
	}
}

// Actions issued by the code (on the orchestration goroutine), or by a
// task's completion (on the loop).

func (e *executor) newTask(kind taskKind, name string) *Task {
	t := &Task{e: e, id: e.nextID, kind: kind, name: name}
	e.nextID++
	e.tasks = append(e.tasks, t)
	e.actions = append(e.actions, t)
	return t
}

func (e *executor) deliver(name string, data json.RawMessage) {
	for i, w := range e.waiters {
		if w.name == name {
			e.waiters = append(e.waiters[:i:i], e.waiters[i+1:]...)
			w.complete(data, nil)
			return
		}
	}
	if e.buffered == nil {
		e.buffered = map[string][]json.RawMessage{}
	}
	e.buffered[name] = append(e.buffered[name], data)
}

// deterministic helpers for the context.

func (e *executor) newGUID() string {
	e.guids++
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", e.rec.InstanceID, e.rec.ExecutionID, e.guids)))
	return hex.EncodeToString(sum[:16])
}
