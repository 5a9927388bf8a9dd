package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/soloist-dev/soloist/orchestrator"
)

// DirectClient starts instances and raises events straight in etcd with the
// orchestrator package's Client, as an operator's tool or a service that
// embeds Soloist's client would, with no node in between: it works while
// every node is down, or for a function no node that serves the API has.
// Its operations are recorded in the scenario's history like the HTTP
// clients'.
type DirectClient struct {
	ID     int
	hist   *History
	clock  *Clock
	client *orchestrator.Client
}

// NewDirectClient returns client number id on the test's own etcd client.
func (e *Env) NewDirectClient(id int, hist *History) *DirectClient {
	return &DirectClient{ID: id, hist: hist, clock: e.Clock,
		client: orchestrator.NewClient(e.Etcd.Client(), orchestrator.ClientConfig{Prefix: e.Keys.Prefix()})}
}

// Start starts function fn as instance id with the JSON object in plus the
// start's tag "req".
func (c *DirectClient) Start(ctx context.Context, fn, id string, in map[string]any) Op {
	req := fmt.Sprintf("d%d-%d", c.ID, nextSeq())
	op := Op{Client: c.ID, Node: "direct", Kind: "start", Function: fn, ID: id, Req: req, Call: c.clock.Now()}
	res, err := c.client.Start(ctx, fn, orchestrator.StartOptions{InstanceID: id, Input: withReq(in, req)})
	op.Return = c.clock.Now()
	var exists *orchestrator.ExistsError
	switch {
	case err == nil && res.Started:
		op.Outcome, op.Code = Started, 202
	case err == nil:
		op.Outcome, op.Code = Existing, 200
	case errors.As(err, &exists):
		op.Outcome, op.Code = Conflict, 409
	case orchestrator.IsPermanent(err) || errors.Is(err, orchestrator.ErrInvalidInput):
		op.Outcome = NoOp
	default:
		op.Outcome = Unknown
	}
	if err != nil {
		op.Err = err.Error()
	}
	c.hist.add(op)
	return op
}

// Raise raises event name with data to instance id.
func (c *DirectClient) Raise(ctx context.Context, id, name string, data []byte) Op {
	op := Op{Client: c.ID, Node: "direct", Kind: "raise", ID: id, Call: c.clock.Now()}
	err := c.client.RaiseEvent(ctx, id, name, data)
	op.Return = c.clock.Now()
	switch {
	case err == nil:
		op.Outcome = OK
	case errors.Is(err, orchestrator.ErrInstanceTerminal):
		op.Outcome = Gone
	case errors.Is(err, orchestrator.ErrInstanceNotFound):
		op.Outcome = NotFound
	case orchestrator.IsPermanent(err) || errors.Is(err, orchestrator.ErrInvalidInput):
		op.Outcome = NoOp
	default:
		op.Outcome = Unknown
	}
	if err != nil {
		op.Err = strings.TrimSpace(err.Error())
	}
	c.hist.add(op)
	return op
}
