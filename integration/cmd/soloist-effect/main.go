// Command soloist-effect is the exec function of the fault suite: every side
// effect it has goes to the test's recording sink, tagged with the
// instance ID, execution ID and fencing token Soloist hands it.
//
// It reads its input JSON from stdin:
//
//	{"req": "c3-17", "steps": 3, "stepMs": 200, "fail": false, "ignoreRefusal": false}
//
// posts a "begin" effect, then one "step" effect after each of steps sleeps
// of stepMs, then "end" (or "fail", and exits 1, when fail is true), and
// prints {"req":..., "token":..., "execution":...} as its output. If the
// sink refuses an effect because it has seen a larger token for the
// instance (HTTP 409), the program exits 3 unless ignoreRefusal is set,
// as a well-behaved client of a fencing-aware downstream would.
//
// With "grandchild": "group" (or "setsid") in its input, it starts, right
// after "begin", a copy of itself with --tick: a background child that
// posts a "tick" effect every 20 ms, with the same instance, execution and
// token, until it is killed (or refused, unless ignoreRefusal). "group"
// leaves it in the program's process group; "setsid" puts it in a new
// session, out of that group. It stands for the background loop of a shell
// script (while :; do curl ...; sleep 0.1; done &), which must die with the
// program's node.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

type input struct {
	Req           string `json:"req"`
	Steps         int    `json:"steps"`
	StepMs        int    `json:"stepMs"`
	Fail          bool   `json:"fail"`
	IgnoreRefusal bool   `json:"ignoreRefusal"`
	Grandchild    string `json:"grandchild"`
}

type effect struct {
	Instance  string `json:"instance"`
	Execution string `json:"execution"`
	Function  string `json:"function"`
	Token     int64  `json:"token"`
	Req       string `json:"req"`
	Kind      string `json:"kind"`
	Step      int    `json:"step"`
	PID       int    `json:"pid"`
}

func main() {
	sink := flag.String("sink", "", "URL the effects are posted to")
	tick := flag.Bool("tick", false, "be the grandchild: post a tick effect every 20ms until killed")
	req := flag.String("req", "", "with --tick: the start tag")
	ignore := flag.Bool("ignore-refusal", false, "with --tick: go on when the sink refuses the token")
	flag.Parse()
	if *sink == "" {
		fmt.Fprintln(os.Stderr, "soloist-effect: --sink is required")
		os.Exit(2)
	}
	var in input
	if *tick {
		in = input{Req: *req, IgnoreRefusal: *ignore}
	} else if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "soloist-effect: input: %v\n", err)
		os.Exit(2)
	}
	token, err := strconv.ParseInt(os.Getenv("SOLOIST_FENCING_TOKEN"), 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soloist-effect: SOLOIST_FENCING_TOKEN: %v\n", err)
		os.Exit(2)
	}
	base := effect{
		Instance:  os.Getenv("SOLOIST_INSTANCE_ID"),
		Execution: os.Getenv("SOLOIST_EXECUTION_ID"),
		Function:  os.Getenv("SOLOIST_FUNCTION"),
		Token:     token,
		Req:       in.Req,
		PID:       os.Getpid(),
	}
	client := &http.Client{Timeout: 3 * time.Second}
	post := func(kind string, step int) {
		e := base
		e.Kind, e.Step = kind, step
		b, _ := json.Marshal(e)
		resp, err := client.Post(*sink, "application/json", bytes.NewReader(b))
		if err != nil {
			fmt.Fprintf(os.Stderr, "soloist-effect: post %s: %v\n", kind, err)
			os.Exit(2)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusConflict && !in.IgnoreRefusal {
			fmt.Fprintf(os.Stderr, "soloist-effect: the sink refused fencing token %d as stale\n", token)
			os.Exit(3)
		}
	}
	if *tick {
		for i := 1; ; i++ {
			post("tick", i)
			time.Sleep(20 * time.Millisecond)
		}
	}
	post("begin", 0)
	if in.Grandchild != "" {
		startGrandchild(*sink, in)
	}
	for i := 1; i <= in.Steps; i++ {
		time.Sleep(time.Duration(in.StepMs) * time.Millisecond)
		post("step", i)
	}
	if in.Fail {
		post("fail", in.Steps)
		fmt.Fprintln(os.Stderr, "soloist-effect: failing on purpose")
		os.Exit(1)
	}
	post("end", in.Steps)
	out, _ := json.Marshal(map[string]any{"req": in.Req, "token": token, "execution": base.Execution})
	fmt.Println(string(out))
}

// startGrandchild starts the ticking copy of this program and leaves it
// running: it is a descendant of the node that the node must kill.
func startGrandchild(sink string, in input) {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soloist-effect: %v\n", err)
		os.Exit(2)
	}
	cmd := exec.Command(self, "--sink", sink, "--tick", "--req", in.Req, "--ignore-refusal="+strconv.FormatBool(in.IgnoreRefusal))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: in.Grandchild == "setsid"}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "soloist-effect: start the grandchild: %v\n", err)
		os.Exit(2)
	}
	_ = cmd.Process.Release()
}
