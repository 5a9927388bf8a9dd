package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// continuationHeader carries the token of the next page, as in Durable
// Functions.
const continuationHeader = "x-ms-continuation-token"

// newListCommand prints the instances, following continuation tokens until
// --top instances (all without --top).
func newListCommand() *cobra.Command {
	var co clientOptions
	var status, prefix string
	var top int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list instances",
		Args:  exactArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if top < 0 {
				return usagef("list", "--top must be positive")
			}
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if status != "" {
				q.Set("runtimeStatus", status)
			}
			if prefix != "" {
				q.Set("instanceIdPrefix", prefix)
			}
			all := []json.RawMessage{}
			token := ""
			for {
				if top > 0 {
					q.Set("top", strconv.Itoa(min(top-len(all), 1000)))
				}
				h := http.Header{}
				if token != "" {
					h.Set(continuationHeader, token)
				}
				resp, err := c.do(cmd.Context(), "GET", durableBase+"/instances", q, h, nil)
				if err != nil {
					return err
				}
				var page []json.RawMessage
				if err := json.Unmarshal(resp.body, &page); err != nil {
					return fmt.Errorf("the server's list is not a JSON array: %w", err)
				}
				all = append(all, page...)
				token = resp.header.Get(continuationHeader)
				if token == "" || len(page) == 0 || (top > 0 && len(all) >= top) {
					break
				}
			}
			b, err := json.Marshal(all)
			if err != nil {
				return err
			}
			return p.print(b, listTable(b))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&status, "status", "", "only instances in these runtime `statuses`, comma-separated, e.g. Running,Pending")
	fs.StringVar(&prefix, "prefix", "", "only instance IDs that start with `P`")
	fs.IntVar(&top, "top", 0, "at most `N` instances; 0 means all")
	addClientFlags(cmd, &co)
	return cmd
}
