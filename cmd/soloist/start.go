package main

import (
	"context"
	"flag"
	"io"
	"net/url"
)

const startSynopsis = "soloist start FUNCTION [ID] [--input JSON] [--conflict-policy fail|useExisting|terminateExisting] [--reuse-policy allow|allowFailedOnly|reject]"

// runStart starts an instance: POST /api/orchestrators/{function}[/{id}].
// It prints the check-status body (202), or the existing instance's with
// --conflict-policy useExisting (200).
func runStart(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet("start", &cf)
	input := fs.String("input", "", "input of the instance as `JSON` (default null)")
	conflict := fs.String("conflict-policy", "", "when ID is active: fail (409), useExisting or terminateExisting (default fail)")
	reuse := fs.String("reuse-policy", "", "when ID is terminal: allow, allowFailedOnly or reject (default allow)")
	pos, c, err := parseClient(fs, &cf, args, e, stderr, startSynopsis, 1, 2)
	if err != nil {
		return err
	}
	path := "/api/orchestrators/" + url.PathEscape(pos[0])
	if len(pos) == 2 {
		path += "/" + url.PathEscape(pos[1])
	}
	q := url.Values{}
	if *conflict != "" {
		q.Set("conflictPolicy", *conflict)
	}
	if *reuse != "" {
		q.Set("reusePolicy", *reuse)
	}
	body := []byte("null")
	if flagSet(fs, "input") {
		if body, err = jsonArg("start", "input", *input); err != nil {
			return err
		}
	}
	resp, err := c.do(ctx, "POST", path, q, nil, body)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp.body)
}

// flagSet reports whether a flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
