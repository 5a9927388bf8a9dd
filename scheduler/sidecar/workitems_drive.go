package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// The driver side: how a node runs an instance whose orchestration a
// connected worker serves. The node (scheduler.Node, through Remote) opens
// the execution with its fenced holding and hands it to
// orchestrator.DriveSteps, which sends each step here (driveStep: one
// OrchestratorRequest, its answer turned into orchestrator actions and
// committed by the engine before the worker is answered) and the
// activities the steps schedule (activity: one ActivityRequest, its answer
// the task's result, which the driver hands to the next step in memory;
// the step's commit stores it).

// Remote is the server's scheduler.Remote: give it to the node with
// Node.SetRemote before the node starts, and the node campaigns for (and
// runs here) the instances whose orchestration a connected worker serves.
func (s *Server) Remote() scheduler.Remote { return remote{s} }

type remote struct{ s *Server }

func (r remote) Serves(name, version string) bool { return r.s.work.Serves(name, version) }

func (r remote) Functions() []string { return r.s.work.Functions() }

func (r remote) Workers() int { return r.s.work.Workers() }

func (r remote) Drive(ctx context.Context, exec *orchestrator.Execution, opts orchestrator.RunOptions) (*orchestrator.Driver, error) {
	x := ExecutionOf(exec.Status())
	x.Trace = exec.Trace()
	var local *orchestrator.Registry
	if r.s.node != nil {
		local = r.s.node.Registry() // the node's Go activities run here, as a worker without filters is told
	}
	h, max := r.s.work, r.s.maxPayload
	return orchestrator.DriveSteps(ctx, exec, opts, orchestrator.StepDriverOptions{
		Activities: local,
		Step: func(ctx context.Context, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error) error {
			return h.driveStep(ctx, x, item, complete, max)
		},
		Task: func(ctx context.Context, t orchestrator.RemoteTask) (json.RawMessage, *orchestrator.FailureDetails, error) {
			return h.activity(ctx, t, max)
		},
	}), nil
}

// driveStep sends one engine step to a worker and commits its answer. An
// answer refused before the engine saw it (an action the server does not
// know, entity actions, malformed payloads) comes back wrapping
// orchestrator.ErrInvalidAction; the worker was told the refusal.
func (h *hub) driveStep(ctx context.Context, x Execution, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error, maxPayload int) error {
	called := false
	past, news := item.Past, item.New
	if item.First {
		// The execution's start (ContinueAsNew writes it with the next
		// history) is new to every worker, as in the reference backend.
		past, news = nil, append(append([]orchestrator.HistoryEvent(nil), past...), news...)
	}
	err := h.step(ctx, stepRequest{x: x, name: item.Name, fence: item.FencingToken, past: past, news: news, maxPayload: maxPayload},
		func(res *pb.OrchestratorResponse) error {
			actions, err := actionsOf(res, maxPayload)
			if err != nil {
				return err
			}
			called = true
			if err := complete(actions); err != nil {
				if errors.Is(err, orchestrator.ErrInvalidAction) {
					return status.Error(codes.InvalidArgument, err.Error())
				}
				return err
			}
			return nil
		})
	if err != nil && !called {
		if st, ok := status.FromError(err); ok && (st.Code() == codes.InvalidArgument || st.Code() == codes.Unimplemented) {
			return fmt.Errorf("%w: %s", orchestrator.ErrInvalidAction, st.Message())
		}
	}
	return closing(ctx, err)
}

// drainGrace is how long a run whose server shut down waits for the
// node's drain to stop it (and hand the instance over) before it reports
// the shutdown as its own failure.
const drainGrace = 10 * time.Second

// closing waits, for an error that says the server shuts down, until the
// run is stopped (the node drains at the same time), up to drainGrace.
func closing(ctx context.Context, err error) error {
	if !errors.Is(err, errHubClosed) {
		return err
	}
	t := time.NewTimer(drainGrace)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return err
	}
}

// activity runs an activity task of an instance this node holds: with a
// worker of this node that serves it (dispatchActivity), or, when none
// does, through the task queue for a worker on any node
// (orchestrator.ErrTaskQueued: the result comes through the inbox). A task
// in the queue already (an earlier holder queued it) is left there.
func (h *hub) activity(ctx context.Context, t orchestrator.RemoteTask, maxPayload int) (json.RawMessage, *orchestrator.FailureDetails, error) {
	if h.tq != nil {
		if h.tq.queued(t) {
			return nil, nil, orchestrator.ErrTaskQueued // its result comes through the inbox
		}
		if !h.servesActivity(t.Name) {
			return nil, nil, h.tq.put(ctx, t)
		}
	}
	return h.dispatchActivity(ctx, t, maxPayload)
}

// dispatchActivity sends an activity task to a worker of this node that
// serves it and waits for its answer: the result, or the failure. An answer
// whose result cannot be taken (not JSON, over the payload limit) is
// refused to the worker and fails the task with the reason.
func (h *hub) dispatchActivity(ctx context.Context, t orchestrator.RemoteTask, maxPayload int) (json.RawMessage, *orchestrator.FailureDetails, error) {
	d := &dispatch{
		kind: kindActivity, name: t.Name, instanceID: t.InstanceID, executionID: t.ExecutionID, taskID: int32(t.ID), fence: t.FencingToken,
		act: &pb.ActivityRequest{
			Name: t.Name, Version: optString(t.Version), Input: optJSON(t.Input), TaskId: int32(t.ID),
			OrchestrationInstance: &pb.OrchestrationInstance{InstanceId: t.InstanceID, ExecutionId: wrapperspb.String(t.ExecutionID)},
		},
	}
	if t.Trace.Parent != "" {
		// The SDKs make the activity's span a child of this (the run's).
		d.act.ParentTraceContext = &pb.TraceContext{TraceParent: t.Trace.Parent}
		if t.Trace.State != "" {
			d.act.ParentTraceContext.TraceState = wrapperspb.String(t.Trace.State)
		}
	}
	var ev *orchestrator.HistoryEvent
	err := h.run(ctx, d, func(a answer) (error, bool) {
		e, err := activityEvent(d, a.act, maxPayload)
		if err != nil {
			msg := err.Error()
			if st, ok := status.FromError(err); ok {
				msg = st.Message()
			}
			ev = &orchestrator.HistoryEvent{EventType: orchestrator.EventTaskFailed,
				FailureDetails: &orchestrator.FailureDetails{ErrorType: "InvalidActivityResult", ErrorMessage: msg, IsNonRetriable: true}}
			return err, true
		}
		ev = &e
		return nil, true
	})
	if ev == nil {
		return nil, nil, closing(ctx, err)
	}
	return ev.Result, ev.FailureDetails, nil
}

// actionsOf turns a worker's checked answer into the engine's actions: the
// custom status first (when sent), then the actions in their order.
func actionsOf(res *pb.OrchestratorResponse, maxPayload int) ([]orchestrator.Action, error) {
	if err := checkActions(res, maxPayload); err != nil {
		return nil, err
	}
	var out []orchestrator.Action
	if cs := res.GetCustomStatus(); cs != nil {
		v, _ := customStatusOf(cs, maxPayload)
		if v == nil {
			v = json.RawMessage("null")
		}
		out = append(out, orchestrator.SetCustomStatus{Status: v})
	}
	for _, a := range res.GetActions() {
		id := int(a.GetId())
		switch t := a.GetOrchestratorActionType().(type) {
		case *pb.OrchestratorAction_ScheduleTask:
			in, _ := payloadOf("", t.ScheduleTask.GetInput(), maxPayload)
			out = append(out, orchestrator.ScheduleTask{ID: id, Name: t.ScheduleTask.GetName(), Version: t.ScheduleTask.GetVersion().GetValue(), Input: in})
		case *pb.OrchestratorAction_CreateTimer:
			out = append(out, orchestrator.CreateTimer{ID: id, FireAt: t.CreateTimer.GetFireAt().AsTime().UTC()})
		case *pb.OrchestratorAction_CreateSubOrchestration:
			c := t.CreateSubOrchestration
			in, _ := payloadOf("", c.GetInput(), maxPayload)
			out = append(out, orchestrator.CreateSubOrchestration{ID: id, Name: c.GetName(), InstanceID: c.GetInstanceId(), Version: c.GetVersion().GetValue(), Input: in})
		case *pb.OrchestratorAction_SendEvent:
			s := t.SendEvent
			data, _ := payloadOf("", s.GetData(), maxPayload)
			out = append(out, orchestrator.SendEvent{ID: id, InstanceID: s.GetInstance().GetInstanceId(), Name: s.GetName(), Data: data})
		case *pb.OrchestratorAction_TerminateOrchestration:
			tm := t.TerminateOrchestration
			out = append(out, orchestrator.TerminateInstance{ID: id, InstanceID: tm.GetInstanceId(), Reason: terminateReason(tm.GetReason()), Recursive: tm.GetRecurse()})
		case *pb.OrchestratorAction_CompleteOrchestration:
			out = append(out, completeOf(t.CompleteOrchestration, maxPayload))
		}
	}
	return out, nil
}

// completeOf is the engine's Complete for a checked completeOrchestration.
func completeOf(c *pb.CompleteOrchestrationAction, maxPayload int) orchestrator.Complete {
	result, _ := payloadOf("", c.GetResult(), maxPayload)
	switch c.GetOrchestrationStatus() {
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED:
		f := workerFailure(c.GetFailureDetails())
		if f == nil {
			f = &orchestrator.FailureDetails{ErrorType: "OrchestrationFailed", ErrorMessage: c.GetDetails().GetValue()}
		}
		if f.ErrorMessage == "" {
			f.ErrorMessage = "the orchestration failed (its worker gave no message)"
		}
		return orchestrator.Complete{Status: orchestrator.StatusFailed, Failure: f}
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED:
		return orchestrator.Complete{Status: orchestrator.StatusTerminated, Output: result}
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
		co := orchestrator.Complete{Status: orchestrator.StatusContinuedAsNew, Output: result, NewVersion: c.GetNewVersion().GetValue()}
		for _, ev := range c.GetCarryoverEvents() {
			r := ev.GetEventRaised()
			in, _ := payloadOf("", r.GetInput(), maxPayload)
			co.CarryoverEvents = append(co.CarryoverEvents, orchestrator.HistoryEvent{EventType: orchestrator.EventEventRaised, Name: r.GetName(), Input: in})
		}
		return co
	}
	return orchestrator.Complete{Status: orchestrator.StatusCompleted, Output: result}
}
