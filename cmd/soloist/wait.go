package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// newWaitCommand waits until an instance is Completed, Failed or
// Terminated and prints its status. It exits 0 only if the instance
// Completed, and 4 if --timeout runs out first. The server does the
// waiting: each request is a long poll (waitForCompletion) that the server
// answers when the instance finishes, driven by its etcd watch, so the CLI
// does not poll.
func newWaitCommand() *cobra.Command {
	var co clientOptions
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "wait until an instance is terminal",
		Long: `Wait until instance ID is Completed, Failed or Terminated and print its
status. The exit code is 0 if it Completed, 1 if it Failed or was
Terminated, 4 if --timeout ran out first. The server holds each request
until the instance finishes (it watches the instance in etcd), up to 25s a
request, so wait does not poll. While the server cannot be reached, wait
says so once and keeps trying.`,
		Args: exactArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usagef("wait", "--timeout must be positive")
			}
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			return wait(cmd.Context(), c, p, cmd.ErrOrStderr(), args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after `D`, e.g. 5m; 0 means wait as long as it takes")
	addClientFlags(cmd, &co)
	return cmd
}

// longPoll is how long one request of wait asks the server to wait; the
// request itself may take longer by requestTimeout.
const longPoll = 25 * time.Second

func wait(ctx context.Context, c *apiClient, p *printer, stderr io.Writer, id string, timeout time.Duration) error {
	var deadline time.Time
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	// After a quick answer that is not final (a server that does not wait:
	// an older one, or one that is shutting down) or an error, wait a
	// little before the next request, a little longer each time.
	interval := 100 * time.Millisecond
	var last *response
	var st struct {
		RuntimeStatus string `json:"runtimeStatus"`
	}
	trouble := "" // what was last reported on stderr, "" while all is well
	for {
		poll := longPoll
		if !deadline.IsZero() {
			poll = min(poll, time.Until(deadline).Truncate(time.Millisecond))
		}
		q := url.Values{"showInput": {"true"}}
		if poll > 0 {
			q.Set("waitForCompletion", poll.String())
		}
		began := time.Now()
		resp, err := c.doWithin(ctx, max(poll, 0)+requestTimeout, "GET", instancePath(id), q, nil, nil)
		var ae *apiError
		var ue *unreachableError
		switch {
		case err == nil:
			if trouble != "" {
				fmt.Fprintf(stderr, "soloist: the server at %s answers again; still waiting for '%s'\n", c.base, id)
				trouble = ""
			}
			last = resp
			if err := json.Unmarshal(resp.body, &st); err != nil {
				return fmt.Errorf("the server's status of '%s' is not JSON: %w", id, err)
			}
			switch st.RuntimeStatus {
			case "Completed", "Failed", "Terminated":
				if err := p.print(resp.body, statusTable(resp.body)); err != nil {
					return err
				}
				if st.RuntimeStatus != "Completed" {
					return fmt.Errorf("instance '%s' is %s", id, st.RuntimeStatus)
				}
				return nil
			}
			if time.Since(began) >= poll/2 {
				interval = 100 * time.Millisecond
				continue // the server waited: ask again at once
			}
		case ctx.Err() != nil:
		case errors.As(err, &ae) && ae.code < 500:
			return err // 404 and the like will not change
		case errors.As(err, &ue) || ae != nil:
			// Unreachable or a 5xx: say so once (and again only if the
			// trouble changes), and keep waiting.
			kind := "unreachable"
			if ae != nil {
				kind = fmt.Sprint(ae.code)
			}
			if kind != trouble {
				fmt.Fprintf(stderr, "soloist: %v; still waiting for '%s'\n", err, id)
				trouble = kind
			}
		default:
			return err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			if last != nil {
				_ = p.print(last.body, statusTable(last.body))
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return &exitError{code: exitTimeout, err: fmt.Errorf("timed out after %s waiting for '%s'; it is still %s", timeout, id, orUnknown(st.RuntimeStatus))}
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
