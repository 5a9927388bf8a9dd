package main

import (
	"context"
	"io"
	"net/url"
)

// runTerminate ends an active instance: POST .../terminate?reason=.
func runTerminate(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	return reasonVerb(ctx, "terminate", args, e, stdout, stderr)
}

// runSuspend pauses an active instance: POST .../suspend?reason=.
func runSuspend(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	return reasonVerb(ctx, "suspend", args, e, stdout, stderr)
}

// runResume lets a suspended instance run again: POST .../resume?reason=.
func runResume(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	return reasonVerb(ctx, "resume", args, e, stdout, stderr)
}

func reasonVerb(ctx context.Context, verb string, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet(verb, &cf)
	reason := fs.String("reason", "", "why, recorded with the instance")
	pos, c, err := parseClient(fs, &cf, args, e, stderr, "soloist "+verb+" ID [--reason R]", 1, 1)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *reason != "" {
		q.Set("reason", *reason)
	}
	resp, err := c.do(ctx, "POST", instancePath(pos[0], verb), q, nil, nil)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp.body)
}

// runRaise delivers an external event: POST .../raiseEvent/{event}.
func runRaise(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet("raise", &cf)
	data := fs.String("data", "", "event data as `JSON` (default null)")
	pos, c, err := parseClient(fs, &cf, args, e, stderr, "soloist raise ID EVENT [--data JSON]", 2, 2)
	if err != nil {
		return err
	}
	body := []byte("null")
	if flagSet(fs, "data") {
		if body, err = jsonArg("raise", "data", *data); err != nil {
			return err
		}
	}
	resp, err := c.do(ctx, "POST", instancePath(pos[0], "raiseEvent", pos[1]), nil, nil, body)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp.body)
}

// runRestart starts a new execution with the instance's input.
func runRestart(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	return plainVerb(ctx, "restart", "POST", "restart", args, e, stdout, stderr)
}

// runPurge deletes a terminal instance: DELETE .../instances/{id}.
func runPurge(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	return plainVerb(ctx, "purge", "DELETE", "", args, e, stdout, stderr)
}

func plainVerb(ctx context.Context, verb, method, sub string, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet(verb, &cf)
	pos, c, err := parseClient(fs, &cf, args, e, stderr, "soloist "+verb+" ID", 1, 1)
	if err != nil {
		return err
	}
	var rest []string
	if sub != "" {
		rest = []string{sub}
	}
	resp, err := c.do(ctx, method, instancePath(pos[0], rest...), nil, nil, nil)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp.body)
}
