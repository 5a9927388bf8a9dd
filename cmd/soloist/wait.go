package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

const waitSynopsis = "soloist wait ID [--timeout D]"

// runWait polls an instance until it is Completed, Failed or Terminated and
// prints its status. It exits 0 only if the instance Completed.
func runWait(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newClientFlagSet("wait", &cf)
	timeout := fs.Duration("timeout", 0, "give up after `D`, e.g. 5m (default: wait as long as it takes)")
	pos, c, err := parseClient(fs, &cf, args, e, stderr, waitSynopsis, 1, 1)
	if err != nil {
		return err
	}
	if *timeout < 0 {
		return usagef("wait", "--timeout must be positive")
	}
	id := pos[0]
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	q := url.Values{"showInput": {"true"}}
	interval := 100 * time.Millisecond
	var last *response
	var st struct {
		RuntimeStatus string `json:"runtimeStatus"`
	}
	for {
		resp, err := c.do(ctx, "GET", instancePath(id), q, nil, nil)
		switch {
		case err == nil:
			last = resp
			if err := json.Unmarshal(resp.body, &st); err != nil {
				return fmt.Errorf("the server's status of '%s' is not JSON: %w", id, err)
			}
			switch st.RuntimeStatus {
			case "Completed", "Failed", "Terminated":
				if err := printJSON(stdout, resp.body); err != nil {
					return err
				}
				if st.RuntimeStatus != "Completed" {
					return fmt.Errorf("instance '%s' is %s", id, st.RuntimeStatus)
				}
				return nil
			}
		case ctx.Err() == nil:
			var ae *apiError
			if errors.As(err, &ae) && ae.code < 500 {
				return err // 404 and the like will not change
			}
			fmt.Fprintf(stderr, "soloist: %v; retrying\n", err)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			if last != nil {
				_ = printJSON(stdout, last.body)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %s waiting for '%s'; it is still %s", *timeout, id, orUnknown(st.RuntimeStatus))
			}
			return ctx.Err()
		case <-t.C:
		}
		interval = min(interval*3/2, 2*time.Second)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
