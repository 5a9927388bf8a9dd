package httpapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator"
)

// GET {base}/nodes answers Config.Nodes as a JSON array (workers left out
// when none), refuses a query parameter, and is not served without
// Config.Nodes.
func TestNodesRoute(t *testing.T) {
	t.Parallel()
	nodes := []orchestrator.NodeInfo{
		{Node: "n1", Role: "all", Functions: []string{"*", "Greet"}, Workers: 2},
		{Node: "n2", Role: "api"},
	}
	e := newEnv(t, func(c *Config) {
		c.Nodes = func(context.Context) ([]orchestrator.NodeInfo, error) { return nodes, nil }
	})
	var got []map[string]any
	e.do("GET", BasePath+"/nodes", "").want(t, http.StatusOK).decode(t, &got)
	if len(got) != 2 || got[0]["node"] != "n1" || got[0]["workers"] != float64(2) || got[1]["node"] != "n2" {
		t.Fatalf("nodes %v", got)
	}
	if _, ok := got[1]["workers"]; ok {
		t.Fatalf("n2 has no workers, and the key must leave the field out: %v", got[1])
	}
	e.do("GET", BasePath+"/nodes?top=1", "").want(t, http.StatusBadRequest)

	off := newEnv(t)
	off.do("GET", BasePath+"/nodes", "").want(t, http.StatusNotFound)
}
