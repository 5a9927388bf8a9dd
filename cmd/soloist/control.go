package main

import (
	"io"
	"net/url"

	"github.com/spf13/cobra"
)

// actionResult is what terminate, suspend, resume and raise print: the
// server answers them with an empty 202.
type actionResult struct {
	InstanceID string `json:"instanceId"`
	Operation  string `json:"operation"`
	Event      string `json:"event,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// newControlCommand is terminate, suspend or resume:
// POST .../instances/{id}/{verb}?reason=.
func newControlCommand(verb, short string) *cobra.Command {
	var co clientOptions
	var reason string
	cmd := &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  exactArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			q := url.Values{}
			if reason != "" {
				q.Set("reason", reason)
			}
			if _, err := c.do(cmd.Context(), "POST", instancePath(id, verb), q, nil, nil); err != nil {
				return instanceError(err, verb, id)
			}
			var table func(io.Writer) error
			switch verb {
			case "terminate":
				table = line("Terminated instance '%s'.", id)
			case "suspend":
				table = line("Suspended instance '%s'; 'soloist resume %s' lets it run again.", id, shellQuote(id))
			default:
				table = line("Resumed instance '%s'.", id)
			}
			return p.printValue(actionResult{InstanceID: id, Operation: verb, Reason: reason}, table)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the instance")
	addClientFlags(cmd, &co)
	return cmd
}

// newRaiseCommand delivers an external event: POST .../raiseEvent/{event}.
func newRaiseCommand() *cobra.Command {
	var co clientOptions
	var data string
	cmd := &cobra.Command{
		Use:   "raise ID EVENT",
		Short: "raise an event to an instance",
		Args:  exactArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			body := []byte("null")
			if cmd.Flags().Changed("data") {
				if body, err = jsonArg("raise", "data", data); err != nil {
					return err
				}
			}
			id, event := args[0], args[1]
			if _, err := c.do(cmd.Context(), "POST", instancePath(id, "raiseEvent", event), nil, nil, body); err != nil {
				return instanceError(err, "raise", id)
			}
			return p.printValue(actionResult{InstanceID: id, Operation: "raiseEvent", Event: event},
				line("Raised event '%s' on instance '%s'.", event, id))
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "event data as `JSON`; without it the data is null")
	addClientFlags(cmd, &co)
	return cmd
}

// newRestartCommand starts a new execution with the instance's input.
func newRestartCommand() *cobra.Command {
	return newInstanceCommand("restart ID", "start a new execution of an instance with its input", "POST", "restart",
		func(id string) string { return instancePath(id, "restart") },
		func(id string) string {
			return "Restarted instance '" + id + "' as a new execution. See it with: soloist status " + shellQuote(id)
		})
}

// newPurgeCommand deletes a terminal instance: DELETE .../instances/{id}.
func newPurgeCommand() *cobra.Command {
	return newInstanceCommand("purge ID", "delete a terminal instance and its history", "DELETE", "purge",
		func(id string) string { return instancePath(id) },
		func(id string) string { return "Purged instance '" + id + "'." })
}

// newInstanceCommand is a verb that sends one request about instance ID
// and prints the server's answer (done is its table view).
func newInstanceCommand(use, short, method, op string, path, done func(id string) string) *cobra.Command {
	var co clientOptions
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := co.connect(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			resp, err := c.do(cmd.Context(), method, path(id), nil, nil, nil)
			if err != nil {
				return instanceError(err, op, id)
			}
			return p.print(resp.body, line("%s", done(id)))
		},
	}
	addClientFlags(cmd, &co)
	return cmd
}
