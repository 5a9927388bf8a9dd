package harness

import (
	"fmt"
	"math"
	"time"

	"github.com/anishathalye/porcupine"
)

// The porcupine model of one instance ID: the atomic start with its
// policies, terminate, raise and read from the clients, and the holders'
// acquire, fenced writes, fenced finish and release (taken from etcd's own
// history, each with an interval that surely contains its commit). Client
// operations whose outcome is unknown may have taken effect at any time
// after their call.

type mState struct {
	Exists bool
	Exec   string // req tag of the current execution
	Status string // "active", or the terminal status
	Holder int64  // fencing token of the owners key, 0 if none
	// HolderExec is the execution the owners key holds: a replaced
	// execution's holder keeps its key until it sees the change and
	// releases it, and until then nobody can take the new execution.
	HolderExec string
	MaxTok     int64 // largest token ever acquired
}

type mInput struct {
	Kind   string // start, terminate, raise, read; acquire, write, finish, unhold
	ID     string
	CP, RP string
	Req    string // start: its tag; internal: the execution's tag
	Token  int64
	Status string // finish: Completed or Failed
}

type mOutput struct {
	Outcome string
	Status  string // read: "active" or terminal status
	ExecReq string
	Holder  bool
	Token   int64
}

const active = "active"

func statusClass(s string) string {
	switch s {
	case "Completed", "Failed", "Terminated":
		return s
	}
	return active
}

func cpOf(cp string) string {
	if cp == "" {
		return "fail"
	}
	return cp
}

// reuseAllows says whether reusePolicy rp lets a terminal status start again.
func reuseAllows(rp, status string) bool {
	switch rp {
	case "", "allow":
		return true
	case "allowFailedOnly": // as Temporal's AllowDuplicateFailedOnly: Terminated counts as failed
		return status == "Failed" || status == "Terminated"
	}
	return false
}

func canStart(s mState, in mInput) bool {
	switch {
	case !s.Exists:
		return true
	case s.Status == active:
		return cpOf(in.CP) == "terminateExisting"
	default:
		return reuseAllows(in.RP, s.Status)
	}
}

func started(in mInput, s mState) mState {
	return mState{Exists: true, Exec: in.Req, Status: active, Holder: s.Holder, HolderExec: s.HolderExec, MaxTok: s.MaxTok}
}

func mStep(st, inp, outp interface{}) []interface{} {
	s, in, out := st.(mState), inp.(mInput), outp.(mOutput)
	none := []interface{}{}
	same := []interface{}{s}
	switch in.Kind {
	case "start":
		ok := canStart(s, in)
		switch out.Outcome {
		case Started:
			if ok {
				return []interface{}{started(in, s)}
			}
		case Conflict:
			if !ok && !(s.Exists && s.Status == active && cpOf(in.CP) == "useExisting") {
				return same
			}
		case Existing:
			if s.Exists && s.Status == active && cpOf(in.CP) == "useExisting" {
				return same
			}
		case Unknown:
			if ok {
				return []interface{}{s, started(in, s)}
			}
			return same
		}
		return none
	case "terminate":
		switch out.Outcome {
		case OK:
			if s.Exists && s.Status == active {
				t := s
				t.Status = "Terminated"
				return []interface{}{t}
			}
		case Gone:
			if s.Exists && s.Status != active {
				return same
			}
		case NotFound:
			if !s.Exists {
				return same
			}
		case Unknown:
			if s.Exists && s.Status == active {
				t := s
				t.Status = "Terminated"
				return []interface{}{s, t}
			}
			return same
		}
		return none
	case "raise":
		switch out.Outcome {
		case OK:
			if s.Exists && s.Status == active {
				return same
			}
		case Gone:
			if s.Exists && s.Status != active {
				return same
			}
		case NotFound:
			if !s.Exists {
				return same
			}
		case Unknown:
			return same
		}
		return none
	case "read":
		if out.Outcome == NotFound {
			if !s.Exists {
				return same
			}
			return none
		}
		if !s.Exists || s.Exec != out.ExecReq || s.Status != out.Status {
			return none
		}
		holds := s.Holder != 0 && s.HolderExec == s.Exec
		if out.Holder != holds || (out.Holder && out.Token != s.Holder) {
			return none
		}
		return same
	case "acquire":
		if s.Exists && s.Exec == in.Req && s.Status == active && s.Holder == 0 && in.Token > s.MaxTok {
			t := s
			t.Holder, t.HolderExec, t.MaxTok = in.Token, in.Req, in.Token
			return []interface{}{t}
		}
		return none
	case "write":
		if s.Exists && s.Exec == in.Req && s.Status == active && s.Holder == in.Token && s.HolderExec == in.Req {
			return same
		}
		return none
	case "finish":
		if s.Exists && s.Exec == in.Req && s.Status == active && s.Holder == in.Token && s.HolderExec == in.Req {
			t := s
			t.Status, t.Holder, t.HolderExec = in.Status, 0, ""
			return []interface{}{t}
		}
		return none
	case "unhold":
		if s.Holder == in.Token {
			t := s
			t.Holder, t.HolderExec = 0, ""
			return []interface{}{t}
		}
		return none
	}
	return none
}

var instanceModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byID := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			id := op.Input.(mInput).ID
			if _, ok := byID[id]; !ok {
				order = append(order, id)
			}
			byID[id] = append(byID[id], op)
		}
		var out [][]porcupine.Operation
		for _, id := range order {
			out = append(out, byID[id])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{mState{}} },
	Step: mStep,
	DescribeOperation: func(inp, outp interface{}) string {
		in, out := inp.(mInput), outp.(mOutput)
		switch in.Kind {
		case "start":
			return fmt.Sprintf("start(%s, cp=%s, rp=%s) -> %s", in.Req, in.CP, in.RP, out.Outcome)
		case "read":
			if out.Outcome == NotFound {
				return "read -> notfound"
			}
			return fmt.Sprintf("read -> %s %s holder=%v/%d", out.ExecReq, out.Status, out.Holder, out.Token)
		case "acquire", "write", "unhold":
			return fmt.Sprintf("%s(%s, token %d)", in.Kind, in.Req, in.Token)
		case "finish":
			return fmt.Sprintf("finish(%s, token %d, %s)", in.Req, in.Token, in.Status)
		}
		return fmt.Sprintf("%s -> %s", in.Kind, out.Outcome)
	},
	DescribeState: func(st interface{}) string {
		s := st.(mState)
		if !s.Exists {
			return "absent"
		}
		return fmt.Sprintf("%s %s holder=%d (of %s)", s.Exec, s.Status, s.Holder, s.HolderExec)
	},
}

// porcupineOp is one operation of the history fed to porcupine.
func porcupineOp(client int, in mInput, out mOutput, call, ret time.Duration, unknown bool) porcupine.Operation {
	r := int64(ret)
	if unknown {
		r = math.MaxInt64 / 2
	}
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: int64(call), Return: r}
}
