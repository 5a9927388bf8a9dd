package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// The client side of the protocol, mapped onto orchestrator.Client.

// Hello answers the SDKs' connection check.
func (s *Server) Hello(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// StartInstance starts an orchestration: one etcd transaction when the
// request's reuse policy maps onto Soloist's policies exactly (startPolicy).
func (s *Server) StartInstance(ctx context.Context, req *pb.CreateInstanceRequest) (*pb.CreateInstanceResponse, error) {
	if req.GetName() == "" {
		return nil, invalid("name is empty: give the orchestration's name")
	}
	if err := s.ready(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "this node cannot take starts now: %v", err)
	}
	opts := orchestrator.StartOptions{
		InstanceID: req.GetInstanceId(),
		Version:    req.GetVersion().GetValue(),
		Tags:       req.GetTags(),
	}
	if in := req.GetInput(); in != nil {
		opts.Input = json.RawMessage(in.GetValue())
	}
	if ts := req.GetScheduledStartTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalid("invalid scheduledStartTimestamp: %v", err)
		}
		opts.StartAt = ts.AsTime()
	}
	if tc := req.GetParentTraceContext(); tc.GetTraceParent() != "" {
		opts.Trace = orchestrator.TraceContext{Parent: tc.GetTraceParent(), State: tc.GetTraceState().GetValue()}
	} else {
		opts.Trace = orchestrator.TraceContextFrom(ctx) // the call's span, or zero
	}
	if opts.InstanceID == "" {
		opts.InstanceID = orchestrator.NewID()
	}
	p, err := policyOf(req.GetOrchestrationIdReusePolicy())
	if err != nil {
		return nil, err
	}
	if cp, rp, ok := p.exact(); ok {
		opts.ConflictPolicy, opts.ReusePolicy = cp, rp
		if rp == orchestrator.ReuseIgnore {
			opts.IgnoreStatuses = p.ignoredTerminal()
		}
		res, err := s.start(ctx, req.GetName(), opts)
		if err != nil {
			return nil, s.toStatus(ctx, err, "start")
		}
		return &pb.CreateInstanceResponse{InstanceId: res.Status.InstanceID}, nil
	}
	return s.startDeciding(ctx, req.GetName(), opts, p)
}

// startDeciding starts under a policy that Soloist's policies cannot say
// exactly: it reads the instance, decides on its status, and starts with
// the policies that allow exactly that status's class; a start refused
// because the instance changed in between decides again on what is there.
func (s *Server) startDeciding(ctx context.Context, name string, opts orchestrator.StartOptions, p startPolicy) (*pb.CreateInstanceResponse, error) {
	id := opts.InstanceID
	for range 8 {
		st, err := s.client.Status(ctx, id)
		switch {
		case errors.Is(err, orchestrator.ErrInstanceNotFound):
			opts.ConflictPolicy, opts.ReusePolicy = orchestrator.ConflictFail, orchestrator.ReuseReject
		case err != nil:
			return nil, s.toStatus(ctx, err, "start")
		default:
			switch p.decide(st.RuntimeStatus) {
			case outcomeExists:
				return nil, existsStatus(id, st.RuntimeStatus, "the reuse policy does not let a start replace it")
			case outcomeIgnore:
				return &pb.CreateInstanceResponse{InstanceId: id}, nil
			}
			if st.RuntimeStatus.Active() {
				opts.ConflictPolicy, opts.ReusePolicy = orchestrator.ConflictTerminateExisting, orchestrator.ReuseReject
			} else {
				opts.ConflictPolicy, opts.ReusePolicy = orchestrator.ConflictFail, orchestrator.ReuseAllow
			}
		}
		res, err := s.start(ctx, name, opts)
		if errors.Is(err, orchestrator.ErrInstanceExists) {
			continue // it changed class in between: decide again
		}
		if err != nil {
			return nil, s.toStatus(ctx, err, "start")
		}
		return &pb.CreateInstanceResponse{InstanceId: res.Status.InstanceID}, nil
	}
	return nil, status.Errorf(codes.Unavailable, "start of '%s': the instance kept changing while the start decided; try again", id)
}

// outcome is what a start does to an existing instance.
type outcome int

const (
	outcomeExists  outcome = iota // refused: ALREADY_EXISTS
	outcomeReplace                // a new execution replaces it
	outcomeIgnore                 // nothing starts; the answer is the ID
)

// startPolicy is a request's reuse policy, in both dialects, as the
// outcome per status of the existing instance.
type startPolicy struct {
	replace, ignore map[orchestrator.RuntimeStatus]bool
}

var (
	activeStatuses = []orchestrator.RuntimeStatus{orchestrator.StatusPending, orchestrator.StatusRunning,
		orchestrator.StatusSuspended, orchestrator.StatusContinuedAsNew}
	terminalStatuses = []orchestrator.RuntimeStatus{orchestrator.StatusCompleted, orchestrator.StatusFailed, orchestrator.StatusTerminated}
)

// policyOf reads a request's reuse policy.
//
//   - None: Soloist's default, which the seed's check-then-start relies
//     on: an active instance refuses the start, a terminal one is replaced.
//   - The older dialect (the Go SDK): field 2 IGNORE or TERMINATE applies to
//     the statuses of field 1 (ignore the start, or replace the instance);
//     any other existing instance refuses it.
//   - The current dialect (field 2 ERROR, the zero value): field 1 lists the
//     statuses a start may replace; any other existing instance refuses it.
//
// RUNNING covers ContinuedAsNew, the instant between two generations that
// the protocol shows as running. CANCELED, which Soloist never shows,
// changes nothing.
func policyOf(p *pb.OrchestrationIdReusePolicy) (startPolicy, error) {
	sp := startPolicy{replace: map[orchestrator.RuntimeStatus]bool{}, ignore: map[orchestrator.RuntimeStatus]bool{}}
	if p == nil {
		for _, st := range terminalStatuses {
			sp.replace[st] = true
		}
		return sp, nil
	}
	set := sp.replace
	switch p.GetAction() {
	case pb.CreateOrchestrationAction_ERROR, pb.CreateOrchestrationAction_TERMINATE:
	case pb.CreateOrchestrationAction_IGNORE:
		set = sp.ignore
	default:
		return sp, invalid("invalid orchestrationIdReusePolicy action %d: use ERROR, IGNORE or TERMINATE", p.GetAction())
	}
	for _, ps := range p.GetReplaceableStatus() {
		if ps == pb.OrchestrationStatus_ORCHESTRATION_STATUS_CANCELED {
			continue
		}
		st, ok := statusFromProto(ps)
		if !ok {
			return sp, invalid("invalid status %d in orchestrationIdReusePolicy: use the OrchestrationStatus values", ps)
		}
		set[st] = true
		if st == orchestrator.StatusRunning {
			set[orchestrator.StatusContinuedAsNew] = true
		}
	}
	return sp, nil
}

// decide is the outcome for an existing instance in status st.
func (p startPolicy) decide(st orchestrator.RuntimeStatus) outcome {
	switch {
	case p.replace[st]:
		return outcomeReplace
	case p.ignore[st]:
		return outcomeIgnore
	}
	return outcomeExists
}

// exact returns Soloist's policies that decide every status as p does, if
// there are such.
func (p startPolicy) exact() (orchestrator.ConflictPolicy, orchestrator.ReusePolicy, bool) {
	// With ReuseIgnore, StartOptions.IgnoreStatuses are p.ignoredTerminal().
	count := func(m map[orchestrator.RuntimeStatus]bool, of []orchestrator.RuntimeStatus) int {
		n := 0
		for _, st := range of {
			if m[st] {
				n++
			}
		}
		return n
	}
	var cp orchestrator.ConflictPolicy
	switch na, ni := count(p.replace, activeStatuses), count(p.ignore, activeStatuses); {
	case na == 0 && ni == 0:
		cp = orchestrator.ConflictFail
	case na == len(activeStatuses):
		cp = orchestrator.ConflictTerminateExisting
	case ni == len(activeStatuses):
		cp = orchestrator.ConflictUseExisting
	default:
		return "", "", false
	}
	var rp orchestrator.ReusePolicy
	switch ni := count(p.ignore, terminalStatuses); {
	case ni > 0 && ni+count(p.replace, terminalStatuses) == len(terminalStatuses):
		rp = orchestrator.ReuseIgnore // the ignored ones kept, the others replaced
	case ni > 0:
		return "", "", false
	case count(p.replace, terminalStatuses) == 0:
		rp = orchestrator.ReuseReject
	case count(p.replace, terminalStatuses) == len(terminalStatuses):
		rp = orchestrator.ReuseAllow
	case !p.replace[orchestrator.StatusCompleted] && p.replace[orchestrator.StatusFailed] && p.replace[orchestrator.StatusTerminated]:
		rp = orchestrator.ReuseAllowFailedOnly
	default:
		return "", "", false
	}
	return cp, rp, true
}

// ignoredTerminal are the terminal statuses p ignores a start on.
func (p startPolicy) ignoredTerminal() []orchestrator.RuntimeStatus {
	var out []orchestrator.RuntimeStatus
	for _, st := range terminalStatuses {
		if p.ignore[st] {
			out = append(out, st)
		}
	}
	return out
}

// GetInstance reads an instance; a missing one is exists=false.
func (s *Server) GetInstance(ctx context.Context, req *pb.GetInstanceRequest) (*pb.GetInstanceResponse, error) {
	st, err := s.client.Status(ctx, req.GetInstanceId())
	return s.instanceResponse(ctx, st, err, req.GetGetInputsAndOutputs(), "get instance")
}

// WaitForInstanceStart waits until the instance is no longer Pending.
func (s *Server) WaitForInstanceStart(ctx context.Context, req *pb.GetInstanceRequest) (*pb.GetInstanceResponse, error) {
	wctx, cancel := s.untilStopping(ctx)
	defer cancel()
	st, err := s.client.WaitForOrchestrationStart(wctx, req.GetInstanceId())
	return s.instanceResponse(wctx, st, err, req.GetGetInputsAndOutputs(), "wait for instance start")
}

// WaitForInstanceCompletion waits until the instance is terminal.
func (s *Server) WaitForInstanceCompletion(ctx context.Context, req *pb.GetInstanceRequest) (*pb.GetInstanceResponse, error) {
	wctx, cancel := s.untilStopping(ctx)
	defer cancel()
	st, err := s.client.WaitForOrchestrationCompletion(wctx, req.GetInstanceId())
	return s.instanceResponse(wctx, st, err, req.GetGetInputsAndOutputs(), "wait for instance completion")
}

// instanceResponse answers a read of an instance.
func (s *Server) instanceResponse(ctx context.Context, st *orchestrator.Status, err error, payloads bool, what string) (*pb.GetInstanceResponse, error) {
	if errors.Is(err, orchestrator.ErrInstanceNotFound) {
		return &pb.GetInstanceResponse{Exists: false}, nil
	}
	if err != nil {
		return nil, s.toStatus(ctx, err, what)
	}
	return &pb.GetInstanceResponse{Exists: true, OrchestrationState: stateOf(st, payloads)}, nil
}

// stateOf is the protocol's form of a status; payloads adds the input,
// output and custom status.
func stateOf(st *orchestrator.Status, payloads bool) *pb.OrchestrationState {
	o := &pb.OrchestrationState{
		InstanceId:              st.InstanceID,
		Name:                    st.Name,
		Version:                 optString(st.Version),
		OrchestrationStatus:     statusToProto(st.RuntimeStatus),
		ScheduledStartTimestamp: optTime(st.ScheduledStartTime),
		CreatedTimestamp:        timestamppb.New(st.CreatedTime),
		LastUpdatedTimestamp:    timestamppb.New(st.LastUpdatedTime),
		ExecutionId:             optString(st.ExecutionID),
		ParentInstanceId:        optString(st.ParentInstanceID),
		Tags:                    st.Tags,
		FailureDetails:          FailureToProto(st.FailureDetails),
	}
	if st.RuntimeStatus.Terminal() {
		o.CompletedTimestamp = timestamppb.New(st.LastUpdatedTime)
	}
	if payloads {
		o.Input, o.Output, o.CustomStatus = nonNull(st.Input), nonNull(st.Output), nonNull(st.CustomStatus)
	}
	return o
}

// nonNull is a JSON payload as a StringValue, absent when empty or null.
func nonNull(v json.RawMessage) *wrapperspb.StringValue {
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	return wrapperspb.String(string(v))
}

// RaiseEvent delivers an external event.
func (s *Server) RaiseEvent(ctx context.Context, req *pb.RaiseEventRequest) (*pb.RaiseEventResponse, error) {
	var data json.RawMessage
	if in := req.GetInput(); in != nil {
		data = json.RawMessage(in.GetValue())
	}
	if err := s.client.RaiseEvent(ctx, req.GetInstanceId(), req.GetName(), data); err != nil {
		return nil, s.toStatus(ctx, err, "raise event")
	}
	return &pb.RaiseEventResponse{}, nil
}

// TerminateInstance terminates an active instance (and, with recursive,
// its active sub-orchestrations). The output becomes the instance's: a
// JSON string is the reason as Soloist keeps it; other JSON is kept as its
// text. Terminating a terminal instance changes nothing and succeeds, as
// the SDKs expect of a cleanup.
func (s *Server) TerminateInstance(ctx context.Context, req *pb.TerminateRequest) (*pb.TerminateResponse, error) {
	reason := terminateReason(req.GetOutput())
	var err error
	if req.GetRecursive() {
		_, err = s.client.TerminateRecursive(ctx, req.GetInstanceId(), reason)
	} else {
		_, err = s.client.Terminate(ctx, req.GetInstanceId(), reason)
	}
	if err != nil && !errors.Is(err, orchestrator.ErrInstanceTerminal) {
		return nil, s.toStatus(ctx, err, "terminate")
	}
	return &pb.TerminateResponse{}, nil
}

// SuspendInstance suspends an active instance.
func (s *Server) SuspendInstance(ctx context.Context, req *pb.SuspendRequest) (*pb.SuspendResponse, error) {
	if _, err := s.client.Suspend(ctx, req.GetInstanceId(), req.GetReason().GetValue()); err != nil {
		return nil, s.toStatus(ctx, err, "suspend")
	}
	return &pb.SuspendResponse{}, nil
}

// ResumeInstance resumes a suspended instance.
func (s *Server) ResumeInstance(ctx context.Context, req *pb.ResumeRequest) (*pb.ResumeResponse, error) {
	if _, err := s.client.Resume(ctx, req.GetInstanceId(), req.GetReason().GetValue()); err != nil {
		return nil, s.toStatus(ctx, err, "resume")
	}
	return &pb.ResumeResponse{}, nil
}

// RestartInstance starts an instance's orchestration again with its
// original input: under a new ID, or as a new execution of its own ID (an
// active instance refuses that: ALREADY_EXISTS).
func (s *Server) RestartInstance(ctx context.Context, req *pb.RestartInstanceRequest) (*pb.RestartInstanceResponse, error) {
	if err := s.ready(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "this node cannot take starts now: %v", err)
	}
	res, err := s.client.Restart(ctx, req.GetInstanceId(), orchestrator.RestartOptions{NewInstanceID: req.GetRestartWithNewInstanceId()})
	if err != nil {
		return nil, s.toStatus(ctx, err, "restart")
	}
	return &pb.RestartInstanceResponse{InstanceId: res.Status.InstanceID}, nil
}

// RewindInstance retries a Failed instance from its first failure.
func (s *Server) RewindInstance(ctx context.Context, req *pb.RewindInstanceRequest) (*pb.RewindInstanceResponse, error) {
	if _, err := s.client.Rewind(ctx, req.GetInstanceId(), req.GetReason().GetValue()); err != nil {
		return nil, s.toStatus(ctx, err, "rewind")
	}
	return &pb.RewindInstanceResponse{}, nil
}

// maxBatch bounds PurgeInstances' instanceBatch, as the protocol does.
const maxBatch = 500

// PurgeInstances deletes terminal instances: one (recursive: with its
// sub-orchestrations), a batch of IDs, or those a filter selects.
func (s *Server) PurgeInstances(ctx context.Context, req *pb.PurgeInstancesRequest) (*pb.PurgeInstancesResponse, error) {
	purgeOne := func(id string) (int, error) {
		if req.GetRecursive() {
			return s.client.PurgeRecursive(ctx, id)
		}
		if err := s.client.Purge(ctx, id); err != nil {
			return 0, err
		}
		return 1, nil
	}
	n := 0
	switch r := req.GetRequest().(type) {
	case *pb.PurgeInstancesRequest_InstanceId:
		k, err := purgeOne(r.InstanceId)
		if err != nil && !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			return nil, s.toStatus(ctx, err, "purge")
		}
		n = k
	case *pb.PurgeInstancesRequest_InstanceBatch:
		ids := r.InstanceBatch.GetInstanceIds()
		if len(ids) > maxBatch {
			return nil, invalid("instanceBatch has %d IDs; the limit is %d", len(ids), maxBatch)
		}
		for _, id := range ids {
			k, err := purgeOne(id)
			if err != nil && !errors.Is(err, orchestrator.ErrInstanceNotFound) {
				return nil, s.toStatus(ctx, err, "purge '"+id+"'")
			}
			n += k
		}
	case *pb.PurgeInstancesRequest_PurgeInstanceFilter:
		f := r.PurgeInstanceFilter
		pf := orchestrator.PurgeFilter{}
		var err error
		if pf.CreatedFrom, err = optTimeIn(f.GetCreatedTimeFrom(), "createdTimeFrom"); err != nil {
			return nil, err
		}
		if pf.CreatedTo, err = optTimeIn(f.GetCreatedTimeTo(), "createdTimeTo"); err != nil {
			return nil, err
		}
		if pf.Statuses, err = statusesIn(f.GetRuntimeStatus()); err != nil {
			return nil, err
		}
		if len(f.GetRuntimeStatus()) > 0 && len(pf.Statuses) == 0 {
			break // only CANCELED, which no instance is
		}
		if n, err = s.client.PurgeMany(ctx, pf); err != nil {
			return nil, s.toStatus(ctx, err, "purge")
		}
	default:
		return nil, invalid("PurgeInstancesRequest names nothing to purge: give instanceId, instanceBatch or purgeInstanceFilter")
	}
	return &pb.PurgeInstancesResponse{DeletedInstanceCount: int32(n), IsComplete: wrapperspb.Bool(true)}, nil
}

// optTimeIn is an optional timestamp of a request; zero when absent.
func optTimeIn(ts *timestamppb.Timestamp, field string) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalid("invalid %s: %v", field, err)
	}
	return ts.AsTime(), nil
}

// statusesIn maps a request's status filter; CANCELED, which Soloist never
// shows, is dropped.
func statusesIn(in []pb.OrchestrationStatus) ([]orchestrator.RuntimeStatus, error) {
	var out []orchestrator.RuntimeStatus
	for _, ps := range in {
		if ps == pb.OrchestrationStatus_ORCHESTRATION_STATUS_CANCELED {
			continue
		}
		st, ok := statusFromProto(ps)
		if !ok {
			return nil, invalid("invalid runtime status %d: use the OrchestrationStatus values", ps)
		}
		out = append(out, st)
	}
	return out, nil
}

// maxPage bounds a page of QueryInstances and ListInstanceIds.
const maxPage = 1000

// QueryInstances lists instances, a page at a time.
func (s *Server) QueryInstances(ctx context.Context, req *pb.QueryInstancesRequest) (*pb.QueryInstancesResponse, error) {
	q := req.GetQuery()
	opts := orchestrator.ListOptions{
		InstanceIDPrefix:  q.GetInstanceIdPrefix().GetValue(),
		ShowInput:         q.GetFetchInputsAndOutputs(),
		Top:               int(q.GetMaxInstanceCount()),
		ContinuationToken: q.GetContinuationToken().GetValue(),
	}
	if opts.Top < 0 || opts.Top > maxPage {
		return nil, invalid("invalid maxInstanceCount %d: use 1 to %d, or 0 for 100", opts.Top, maxPage)
	}
	var err error
	if opts.CreatedFrom, err = optTimeIn(q.GetCreatedTimeFrom(), "createdTimeFrom"); err != nil {
		return nil, err
	}
	if opts.CreatedTo, err = optTimeIn(q.GetCreatedTimeTo(), "createdTimeTo"); err != nil {
		return nil, err
	}
	if opts.Statuses, err = statusesIn(q.GetRuntimeStatus()); err != nil {
		return nil, err
	}
	if len(q.GetRuntimeStatus()) > 0 && len(opts.Statuses) == 0 {
		return &pb.QueryInstancesResponse{}, nil // only CANCELED
	}
	sts, next, err := s.client.List(ctx, opts)
	if err != nil {
		return nil, s.toStatus(ctx, err, "query instances")
	}
	resp := &pb.QueryInstancesResponse{ContinuationToken: optString(next)}
	for _, st := range sts {
		resp.OrchestrationState = append(resp.OrchestrationState, stateOf(st, opts.ShowInput))
	}
	return resp, nil
}

// ListInstanceIds lists instance IDs, a page at a time; completedTimeFrom
// and completedTimeTo keep terminal instances that ended in that span.
func (s *Server) ListInstanceIds(ctx context.Context, req *pb.ListInstanceIdsRequest) (*pb.ListInstanceIdsResponse, error) {
	opts := orchestrator.ListOptions{Top: int(req.GetPageSize()), ContinuationToken: req.GetLastInstanceKey().GetValue()}
	if opts.Top < 0 || opts.Top > maxPage {
		return nil, invalid("invalid pageSize %d: use 1 to %d, or 0 for 100", opts.Top, maxPage)
	}
	from, err := optTimeIn(req.GetCompletedTimeFrom(), "completedTimeFrom")
	if err != nil {
		return nil, err
	}
	to, err := optTimeIn(req.GetCompletedTimeTo(), "completedTimeTo")
	if err != nil {
		return nil, err
	}
	if opts.Statuses, err = statusesIn(req.GetRuntimeStatus()); err != nil {
		return nil, err
	}
	if len(req.GetRuntimeStatus()) > 0 && len(opts.Statuses) == 0 {
		return &pb.ListInstanceIdsResponse{}, nil
	}
	sts, next, err := s.client.List(ctx, opts)
	if err != nil {
		return nil, s.toStatus(ctx, err, "list instance IDs")
	}
	resp := &pb.ListInstanceIdsResponse{LastInstanceKey: optString(next)}
	for _, st := range sts {
		if !from.IsZero() || !to.IsZero() {
			done := st.LastUpdatedTime
			if !st.RuntimeStatus.Terminal() || (!from.IsZero() && done.Before(from)) || (!to.IsZero() && done.After(to)) {
				continue
			}
		}
		resp.InstanceIds = append(resp.InstanceIds, st.InstanceID)
	}
	return resp, nil
}

// historyChunkBytes bounds one HistoryChunk, well under the SDKs' default
// 4 MiB receive limit.
const historyChunkBytes = 1 << 20

// StreamInstanceHistory sends an execution's history (the current one
// unless executionId names another), in chunks.
func (s *Server) StreamInstanceHistory(req *pb.StreamInstanceHistoryRequest, stream grpc.ServerStreamingServer[pb.HistoryChunk]) error {
	ctx := stream.Context()
	st, err := s.client.Status(ctx, req.GetInstanceId())
	if err != nil {
		return s.toStatus(ctx, err, "stream instance history")
	}
	x := ExecutionOf(st)
	if e := req.GetExecutionId().GetValue(); e != "" && e != st.ExecutionID {
		x.ExecutionID = e
	}
	events, err := s.client.History(ctx, x.InstanceID, x.ExecutionID)
	if err != nil {
		return s.toStatus(ctx, err, "stream instance history")
	}
	all, _ := HistoryToProto(x, events, nil)
	chunk := &pb.HistoryChunk{}
	size := 0
	for _, ev := range all {
		n := proto.Size(ev)
		if size+n > historyChunkBytes && len(chunk.Events) > 0 {
			if err := stream.Send(chunk); err != nil {
				return err
			}
			chunk, size = &pb.HistoryChunk{}, 0
		}
		chunk.Events = append(chunk.Events, ev)
		size += n
	}
	if len(chunk.Events) > 0 {
		return stream.Send(chunk)
	}
	return nil
}
