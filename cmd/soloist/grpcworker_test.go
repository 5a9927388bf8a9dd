package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The sidecar's messages, built from the descriptors its generated code
// registers (the package is internal to scheduler/sidecar; this binary
// links it).

func pbMsg(t *testing.T, name string) *dynamicpb.Message {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		t.Fatalf("descriptor %s: %v", name, err)
	}
	return dynamicpb.NewMessage(d.(protoreflect.MessageDescriptor))
}

// pbSet sets a field: a string, an int32, a bool, or a message; for a
// google.protobuf.StringValue field a string is wrapped.
func pbSet(t *testing.T, m protoreflect.Message, field string, v any) {
	t.Helper()
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(field))
	if fd == nil {
		t.Fatalf("%s has no field %s", m.Descriptor().FullName(), field)
	}
	switch v := v.(type) {
	case string:
		if fd.Kind() == protoreflect.MessageKind {
			w := m.Mutable(fd).Message()
			w.Set(w.Descriptor().Fields().ByName("value"), protoreflect.ValueOfString(v))
			return
		}
		m.Set(fd, protoreflect.ValueOfString(v))
	case int32:
		m.Set(fd, protoreflect.ValueOfInt32(v))
	case protoreflect.Message:
		m.Set(fd, protoreflect.ValueOfMessage(v))
	default:
		t.Fatalf("pbSet %T", v)
	}
}

// pbGet walks fields by name; an unset message field gives an invalid
// message whose fields read as zero.
func pbGet(m protoreflect.Message, path ...string) protoreflect.Value {
	var v protoreflect.Value
	for i, name := range path {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return protoreflect.Value{}
		}
		v = m.Get(fd)
		if i < len(path)-1 {
			m = v.Message()
		}
	}
	return v
}

func pbHas(m protoreflect.Message, field string) bool {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(field))
	return fd != nil && m.Has(fd)
}

// A Durable Task worker runs an orchestration with an activity on a real
// soloist serve process: serve gives the node the sidecar's Remote, so the
// node campaigns for what the worker serves and sends it the steps.
func TestServeGRPCWorker(t *testing.T) {
	addr := freeAddr(t)
	p := startServe(t, "--grpc-listen", addr)
	p.waitReady()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := func(method string, req, res protoreflect.ProtoMessage) {
		t.Helper()
		if err := conn.Invoke(ctx, "/TaskHubSidecarService/"+method, req, res); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
	}

	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/TaskHubSidecarService/GetWorkItems")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(pbMsg(t, "GetWorkItemsRequest")); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	items := make(chan *dynamicpb.Message, 8)
	go func() {
		defer close(items)
		for {
			it := pbMsg(t, "WorkItem")
			if err := stream.RecvMsg(it); err != nil {
				return
			}
			if !pbHas(it, "healthPing") {
				items <- it
			}
		}
	}()
	next := func(kind string) (protoreflect.Message, string) {
		t.Helper()
		select {
		case it, ok := <-items:
			if !ok || !pbHas(it, kind) {
				t.Fatalf("work item %v, want %s", it, kind)
			}
			return pbGet(it, kind).Message(), pbGet(it, "completionToken").String()
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30s", kind)
		}
		return nil, ""
	}
	answer := func(tok string, action protoreflect.Message) {
		t.Helper()
		res := pbMsg(t, "OrchestratorResponse")
		pbSet(t, res, "instanceId", "w1")
		pbSet(t, res, "completionToken", tok)
		res.Mutable(res.Descriptor().Fields().ByName("actions")).List().Append(protoreflect.ValueOfMessage(action))
		call("CompleteOrchestratorTask", res, pbMsg(t, "CompleteTaskResponse"))
	}

	start := pbMsg(t, "CreateInstanceRequest")
	pbSet(t, start, "instanceId", "w1")
	pbSet(t, start, "name", "Greet")
	pbSet(t, start, "input", `"Tokyo"`)
	call("StartInstance", start, pbMsg(t, "CreateInstanceResponse"))

	req, tok := next("orchestratorRequest")
	if got := pbGet(req, "instanceId").String(); got != "w1" {
		t.Fatalf("step for %q", got)
	}
	sched := pbMsg(t, "ScheduleTaskAction")
	pbSet(t, sched, "name", "Say")
	pbSet(t, sched, "input", `"Tokyo"`)
	action := pbMsg(t, "OrchestratorAction")
	pbSet(t, action, "id", int32(0))
	pbSet(t, action, "scheduleTask", sched)
	answer(tok, action)

	act, atok := next("activityRequest")
	if pbGet(act, "name").String() != "Say" || pbGet(act, "input", "value").String() != `"Tokyo"` {
		t.Fatalf("activity %v", act)
	}
	ares := pbMsg(t, "ActivityResponse")
	pbSet(t, ares, "instanceId", "w1")
	pbSet(t, ares, "taskId", int32(0))
	pbSet(t, ares, "result", `"Hello Tokyo"`)
	pbSet(t, ares, "completionToken", atok)
	call("CompleteActivityTask", ares, pbMsg(t, "CompleteTaskResponse"))

	req, tok = next("orchestratorRequest")
	news := pbGet(req, "newEvents").List()
	completed := false
	for i := range news.Len() {
		ev := news.Get(i).Message()
		completed = completed || pbHas(ev, "taskCompleted") && pbGet(ev, "taskCompleted", "result", "value").String() == `"Hello Tokyo"`
	}
	if !completed {
		t.Fatalf("second step's new events %v, want the TaskCompleted", news)
	}
	done := pbMsg(t, "CompleteOrchestrationAction")
	pbSet(t, done, "result", `"Hello Tokyo"`)
	done.Set(done.Descriptor().Fields().ByName("orchestrationStatus"), protoreflect.ValueOfEnum(1)) // COMPLETED
	action = pbMsg(t, "OrchestratorAction")
	pbSet(t, action, "id", int32(1))
	pbSet(t, action, "completeOrchestration", done)
	answer(tok, action)

	wait := pbMsg(t, "GetInstanceRequest")
	pbSet(t, wait, "instanceId", "w1")
	wait.Set(wait.Descriptor().Fields().ByName("getInputsAndOutputs"), protoreflect.ValueOfBool(true))
	got := pbMsg(t, "GetInstanceResponse")
	call("WaitForInstanceCompletion", wait, got)
	if out := pbGet(got, "orchestrationState", "output", "value").String(); out != `"Hello Tokyo"` {
		t.Fatalf("output %q (state %v)", out, got)
	}
	cancel()
	if code := p.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
