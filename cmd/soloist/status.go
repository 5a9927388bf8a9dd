package main

import (
	"context"
	"io"
	"net/url"
)

const statusSynopsis = "soloist status ID [--history]"

// runStatus prints an instance's status body.
func runStatus(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet("status", &cf)
	history := fs.Bool("history", false, "include the history events")
	pos, c, err := parseClient(fs, &cf, args, e, stderr, statusSynopsis, 1, 1)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *history {
		q.Set("showHistory", "true")
	}
	resp, err := c.do(ctx, "GET", instancePath(pos[0]), q, nil, nil)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp.body)
}
