package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

const listSynopsis = "soloist list [--status S[,S...]] [--prefix P] [--top N]"

// continuationHeader carries the token of the next page, as in Durable
// Functions.
const continuationHeader = "x-ms-continuation-token"

// runList prints the instances as one JSON array, following continuation
// tokens until --top instances (all without --top).
func runList(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet("list", &cf)
	status := fs.String("status", "", "only instances in these runtime `statuses`, comma-separated, e.g. Running,Pending")
	prefix := fs.String("prefix", "", "only instance IDs that start with `P`")
	top := fs.Int("top", 0, "at most `N` instances (default all)")
	_, c, err := parseClient(fs, &cf, args, e, stderr, listSynopsis, 0, 0)
	if err != nil {
		return err
	}
	if *top < 0 {
		return usagef("list", "--top must be positive")
	}
	q := url.Values{}
	if *status != "" {
		q.Set("runtimeStatus", *status)
	}
	if *prefix != "" {
		q.Set("instanceIdPrefix", *prefix)
	}
	all := []json.RawMessage{}
	token := ""
	for {
		if *top > 0 {
			q.Set("top", strconv.Itoa(min(*top-len(all), 1000)))
		}
		h := http.Header{}
		if token != "" {
			h.Set(continuationHeader, token)
		}
		resp, err := c.do(ctx, "GET", durableBase+"/instances", q, h, nil)
		if err != nil {
			return err
		}
		var page []json.RawMessage
		if err := json.Unmarshal(resp.body, &page); err != nil {
			return fmt.Errorf("the server's list is not a JSON array: %w", err)
		}
		all = append(all, page...)
		token = resp.header.Get(continuationHeader)
		if token == "" || len(page) == 0 || (*top > 0 && len(all) >= *top) {
			break
		}
	}
	b, err := json.Marshal(all)
	if err != nil {
		return err
	}
	return printJSON(stdout, b)
}
