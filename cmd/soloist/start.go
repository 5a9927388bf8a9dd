package main

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

func newStartCommand() *cobra.Command {
	var co clientOptions
	var input, conflict, reuse string
	cmd := &cobra.Command{
		Use:   "start FUNCTION [ID]",
		Short: "start an orchestration instance",
		Long: `Start an instance of FUNCTION under ID (a generated ID without one):
POST /api/orchestrators/FUNCTION[/ID]. It prints the instance's URLs; with
--conflict-policy useExisting an active instance of that ID, and with
--reuse-policy ignore a terminal one, is printed instead of a new one.`,
		Args: exactArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			path := "/api/orchestrators/" + url.PathEscape(args[0])
			if len(args) == 2 {
				path += "/" + url.PathEscape(args[1])
			}
			q := url.Values{}
			if conflict != "" {
				q.Set("conflictPolicy", conflict)
			}
			if reuse != "" {
				q.Set("reusePolicy", reuse)
			}
			body := []byte("null")
			if cmd.Flags().Changed("input") {
				if body, err = jsonArg("start", "input", input); err != nil {
					return err
				}
			}
			resp, err := c.do(cmd.Context(), "POST", path, q, nil, body)
			if err != nil {
				return err
			}
			var cs struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(resp.body, &cs)
			table := line("Started %s as instance '%s'. See it with: soloist status %s", args[0], cs.ID, shellQuote(cs.ID))
			if resp.code == http.StatusOK {
				table = line("Instance '%s' already exists (--conflict-policy useExisting or --reuse-policy ignore); nothing started. See it with: soloist status %s", cs.ID, shellQuote(cs.ID))
			}
			return p.print(resp.body, table)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&input, "input", "", "input of the instance as `JSON`; without it the input is null")
	fs.StringVar(&conflict, "conflict-policy", "", "when ID is active: fail (409, the default), useExisting or terminateExisting")
	fs.StringVar(&reuse, "reuse-policy", "", "when ID is terminal: allow (the default), allowFailedOnly, reject or ignore (200 with the existing instance)")
	addClientFlags(cmd, &co)
	return cmd
}
