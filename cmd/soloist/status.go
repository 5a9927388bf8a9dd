package main

import (
	"net/url"

	"github.com/spf13/cobra"
)

func newStatusCommand() *cobra.Command {
	var co clientOptions
	var history bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "print an instance's status",
		Args:  exactArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if history {
				q.Set("showHistory", "true")
			}
			resp, err := c.do(cmd.Context(), "GET", instancePath(args[0]), q, nil, nil)
			if err != nil {
				return err
			}
			return p.print(resp.body, statusTable(resp.body))
		},
	}
	cmd.Flags().BoolVar(&history, "history", false, "include the history events")
	addClientFlags(cmd, &co)
	return cmd
}
