// Package flowhost is the flowhost task helper for Go, contract flowhost:task@0.2.0.
//
// Declare the task once, in an init function, with the types its arguments and config
// decode into (encoding/json); the helper does the contract's chores:
//
//		type Args struct { Size int `json:"size"` }
//
//		func init() {
//			flowhost.Define(flowhost.Task[Args, map[string]any]{
//				Name: "reserve", Version: "1.0.0", Requires: []string{"size"}, Provides: []string{"volume"},
//				Execute: func(args Args, config map[string]any) (any, error) {
//					if args.Size < 1 {
//						return nil, flowhost.Fail("invalid-size", "size must be at least 1", map[string]any{"size": args.Size})
//					}
//					flowhost.Progress(0.5, map[string]any{"step": "reserving"})
//					flowhost.Log(flowhost.Info, "reserving", "size", args.Size)
//					return map[string]any{"id": "vol-1", "size": args.Size}, nil // any JSON-able value
//				},
//			})
//		}
//
//	  - Arguments and config that are not JSON objects, a missing required name, and input that
//	    does not decode into the declared types fail with `invalid-args` / `invalid-config`
//	    before your function runs.
//	  - Return a *TaskError (Fail) to fail the call with it; any other error fails it with code
//	    `task-failed` and the error's text.
//	  - A panic fails the call with code `uncaught-exception`, the message "bad size (uncaught Go
//	    panic by task `T` in execute)" and details {exception, message, language, traceback}:
//	    never a bare trap.
//	  - Revert (optional) gets the same input, its own Outcome and the flow's failures; its
//	    result, when not nil, is what was undone. When the input does not decode, execute failed
//	    right there: the helper answers that nothing was undone.
package flowhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/flowhost_task_host"
	"wit_component/flowhost_task_task"
)

// TaskError is a task's own failure: a kebab-case code, a sentence for the operator and any
// JSON-able details (nil for none).
type TaskError struct {
	Code    string
	Message string
	Details any
}

func (e *TaskError) Error() string { return e.Code + ": " + e.Message }

// Fail makes the error that fails a call with `code`; details may be nil.
func Fail(code, message string, details any) *TaskError {
	return &TaskError{Code: code, Message: message, Details: details}
}

// Outcome is how the task's own execute ended, handed to Revert: Result holds its JSON
// result, or Error the error it failed with (or was stopped with by the host).
type Outcome struct {
	Result json.RawMessage
	Error  *TaskError
}

// Failure is one failure of the flow that triggered a revert.
type Failure struct {
	Task  string
	Error TaskError
}

// Task declares a task: names, version, data dependencies and its functions. A and C are
// what the arguments and the config decode into (a struct, or map[string]any).
type Task[A, C any] struct {
	Name        string
	Version     string
	Description string
	Requires    []string
	Optional    []string
	Provides    []string
	Execute     func(args A, config C) (any, error)
	Revert      func(args A, config C, outcome Outcome, failures []Failure) (any, error)
}

// defined is a Task with its types erased, as the exports call it.
type defined interface {
	info() flowhost_task_task.TaskInfo
	execute(args, config string) (any, error)
	revert(args, config string, outcome Outcome, failures []Failure) (any, error)
}

var task defined

// Define makes `t` the component's task. Call it once, from an init function.
func Define[A, C any](t Task[A, C]) {
	if task != nil {
		panic("flowhost.Define called twice")
	}
	task = t
}

func (t Task[A, C]) info() flowhost_task_task.TaskInfo {
	orEmpty := func(names []string) []string {
		if names == nil {
			return []string{}
		}
		return names
	}
	return flowhost_task_task.TaskInfo{
		Name: t.Name, Version: t.Version, Description: t.Description,
		Requires: orEmpty(t.Requires), Optional: orEmpty(t.Optional), Provides: orEmpty(t.Provides),
	}
}

// parse decodes the arguments and config, checking what the contract promises about them.
func (t Task[A, C]) parse(argsText, configText string) (args A, config C, err error) {
	var fields map[string]json.RawMessage
	if e := json.Unmarshal([]byte(argsText), &fields); e != nil || fields == nil {
		return args, config, Fail("invalid-args", "arguments must be a JSON object", nil)
	}
	var missing []string
	for _, name := range t.Requires {
		if _, ok := fields[name]; !ok {
			missing = append(missing, "`"+name+"`")
		}
	}
	if len(missing) > 0 {
		return args, config, Fail("invalid-args", "arguments lack "+strings.Join(missing, ", "), nil)
	}
	if e := json.Unmarshal([]byte(argsText), &args); e != nil {
		return args, config, Fail("invalid-args", "arguments do not fit: "+e.Error(), nil)
	}
	var object map[string]json.RawMessage
	if e := json.Unmarshal([]byte(configText), &object); e != nil || object == nil {
		return args, config, Fail("invalid-config", "config must be a JSON object", nil)
	}
	if e := json.Unmarshal([]byte(configText), &config); e != nil {
		return args, config, Fail("invalid-config", "config does not fit: "+e.Error(), nil)
	}
	return args, config, nil
}

func (t Task[A, C]) execute(argsText, configText string) (any, error) {
	args, config, err := t.parse(argsText, configText)
	if err != nil {
		return nil, err
	}
	return t.Execute(args, config)
}

func (t Task[A, C]) revert(argsText, configText string, outcome Outcome, failures []Failure) (any, error) {
	args, config, err := t.parse(argsText, configText)
	if err != nil || t.Revert == nil {
		// Bad input failed execute right there: nothing to undo.
		return nil, nil
	}
	return t.Revert(args, config, outcome, failures)
}

// Call is who is calling: for idempotency keys and logs that name the run.
type Call struct {
	RunID   string
	Task    string
	Attempt uint32
}

// Invocation gives the current call: its run id, the task entry's name and the attempt.
func Invocation() Call {
	info := flowhost_task_host.Invocation()
	return Call{RunID: info.RunId, Task: info.Task, Attempt: info.Attempt}
}

// Progress reports how far the call has come (0.0 to 1.0) with any JSON-able details
// (nil for none).
func Progress(fraction float32, details any) {
	text := witTypes.None[string]()
	if details != nil {
		if encoded, err := json.Marshal(details); err == nil {
			text = witTypes.Some(string(encoded))
		}
	}
	flowhost_task_host.Progress(fraction, text)
}

// Level is a log record's severity.
type Level = flowhost_task_host.Level

// The levels of Log.
const (
	Trace Level = flowhost_task_host.Level_Trace
	Debug Level = flowhost_task_host.Level_Debug
	Info  Level = flowhost_task_host.Level_Info
	Warn  Level = flowhost_task_host.Level_Warn
	Error Level = flowhost_task_host.Level_Error
)

// Log writes a structured log record; fields alternate keys and values, as with log/slog:
// Log(flowhost.Info, "reserved", "volume", id, "size", 10).
func Log(level Level, message string, fields ...any) {
	pairs := make([]witTypes.Tuple2[string, string], 0, (len(fields)+1)/2)
	for i := 0; i < len(fields); i += 2 {
		value := ""
		if i+1 < len(fields) {
			value = fmt.Sprint(fields[i+1])
		}
		pairs = append(pairs, witTypes.Tuple2[string, string]{F0: fmt.Sprint(fields[i]), F1: value})
	}
	flowhost_task_host.Log(level, message, pairs)
}

// The exports, called by the generated bindings through package export_flowhost_task_task.

// Describe answers the contract's describe.
func Describe() flowhost_task_task.TaskInfo {
	if task == nil {
		panic("no task defined: call flowhost.Define from an init function")
	}
	return task.info()
}

// Execute answers the contract's execute.
func Execute(args, config string) (result witTypes.Result[string, flowhost_task_task.TaskError]) {
	defer recovered("execute", func(e flowhost_task_task.TaskError) { result = witTypes.Err[string](e) })
	value, err := task.execute(args, config)
	if err != nil {
		return witTypes.Err[string](witError(err))
	}
	text, err := json.Marshal(value)
	if err != nil {
		return witTypes.Err[string](witError(Fail("invalid-output", "result is not JSON-able: "+err.Error(), nil)))
	}
	return witTypes.Ok[string, flowhost_task_task.TaskError](string(text))
}

// Revert answers the contract's revert.
func Revert(args, config string, outcome flowhost_task_task.Outcome, failures []flowhost_task_task.FlowFailure) (result witTypes.Result[witTypes.Option[string], flowhost_task_task.TaskError]) {
	defer recovered("revert", func(e flowhost_task_task.TaskError) { result = witTypes.Err[witTypes.Option[string]](e) })
	var ended Outcome
	if outcome.Tag() == flowhost_task_task.Outcome_Result {
		ended.Result = rawJSON(outcome.Result())
	} else {
		e := taskError(outcome.Error())
		ended.Error = &e
	}
	failed := make([]Failure, len(failures))
	for i, f := range failures {
		failed[i] = Failure{Task: f.Task, Error: taskError(f.Error)}
	}
	value, err := task.revert(args, config, ended, failed)
	if err != nil {
		return witTypes.Err[witTypes.Option[string]](witError(err))
	}
	if value == nil {
		return witTypes.Ok[witTypes.Option[string], flowhost_task_task.TaskError](witTypes.None[string]())
	}
	text, err := json.Marshal(value)
	if err != nil {
		return witTypes.Err[witTypes.Option[string]](witError(Fail("invalid-output", "revert result is not JSON-able: "+err.Error(), nil)))
	}
	return witTypes.Ok[witTypes.Option[string], flowhost_task_task.TaskError](witTypes.Some(string(text)))
}

// recovered turns a panic into an `uncaught-exception` task-error naming it, with the stack
// in its details and on stderr: a bug reaches the operator named instead of as a trap.
func recovered(function string, fail func(flowhost_task_task.TaskError)) {
	r := recover()
	if r == nil {
		return
	}
	stack := string(debug.Stack())
	exception, message := "panic", fmt.Sprint(r)
	if err, ok := r.(error); ok {
		exception, message = fmt.Sprintf("%T", err), err.Error()
	}
	fmt.Fprintf(os.Stderr, "panic: %s\n\n%s", message, stack)
	name := "?"
	func() {
		defer func() { _ = recover() }()
		name = flowhost_task_host.Invocation().Task
	}()
	fail(witError(Fail("uncaught-exception",
		fmt.Sprintf("%s: %s (uncaught Go panic by task `%s` in %s)", exception, message, name, function),
		map[string]any{"exception": exception, "message": message, "language": "go", "traceback": stack})))
}

// witError is the contract's form of `err`: a *TaskError as it is, any other error as
// `task-failed` with its text.
func witError(err error) flowhost_task_task.TaskError {
	var te *TaskError
	if !errors.As(err, &te) {
		te = Fail("task-failed", err.Error(), nil)
	}
	details := witTypes.None[string]()
	if te.Details != nil {
		if encoded, e := json.Marshal(te.Details); e == nil {
			details = witTypes.Some(string(encoded))
		}
	}
	return flowhost_task_task.TaskError{Code: te.Code, Message: te.Message, Details: details}
}

// taskError is `e` as Go sees it, its details parsed (kept as a string when not JSON).
func taskError(e flowhost_task_task.TaskError) TaskError {
	out := TaskError{Code: e.Code, Message: e.Message}
	if e.Details.IsSome() {
		text := e.Details.Some()
		if json.Unmarshal([]byte(text), &out.Details) != nil {
			out.Details = text
		}
	}
	return out
}

// rawJSON is `text` as JSON: itself when it is JSON, else as a JSON string.
func rawJSON(text string) json.RawMessage {
	if json.Valid([]byte(text)) {
		return json.RawMessage(strings.Clone(text))
	}
	quoted, _ := json.Marshal(text)
	return quoted
}
