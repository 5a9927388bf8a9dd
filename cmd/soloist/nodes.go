package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/soloist-dev/soloist/orchestrator"
)

// newNodesCommand prints the cluster's live nodes as the server sees them
// (their node keys): role, version, draining, the Durable Task workers
// connected to each and what the node runs.
func newNodesCommand() *cobra.Command {
	var co clientOptions
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "list the cluster's live nodes and their connected workers",
		Args:  exactArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			resp, err := c.do(cmd.Context(), "GET", durableBase+"/nodes", nil, nil, nil)
			if err != nil {
				return err
			}
			return p.print(resp.body, nodesTable(resp.body))
		},
	}
	addClientFlags(cmd, &co)
	return cmd
}

// nodesTable is the table view of GET .../nodes.
func nodesTable(body []byte) func(w io.Writer) error {
	return func(w io.Writer) error {
		var nodes []orchestrator.NodeInfo
		if err := json.Unmarshal(body, &nodes); err != nil {
			return fmt.Errorf("the server's node list is not a JSON array of nodes: %w", err)
		}
		fmt.Fprintln(w, "NODE\tROLE\tVERSION\tSTARTED\tSTATE\tWORKERS\tFUNCTIONS")
		for _, n := range nodes {
			state := "up"
			if n.Draining {
				state = "draining"
			}
			role := n.Role
			if role == "" {
				role = "all"
			}
			fns := strings.Join(n.Functions, ",")
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, role, orDash(n.Version), timeText(n.StartedTime),
				state, strconv.Itoa(n.Workers), orDash(fns))
		}
		return nil
	}
}
