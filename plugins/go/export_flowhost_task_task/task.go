// Package export_flowhost_task_task holds the functions the generated bindings
// (wit_exports.go) export: each hands the call to the task defined with flowhost.Define.
package export_flowhost_task_task

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/flowhost"
	. "wit_component/flowhost_task_task"
)

// Describe declares the task's names, version and data dependencies.
func Describe() TaskInfo { return flowhost.Describe() }

// Execute does the work.
func Execute(args, config string) witTypes.Result[string, TaskError] {
	return flowhost.Execute(args, config)
}

// Revert undoes what Execute did.
func Revert(args, config string, outcome Outcome, failures []FlowFailure) witTypes.Result[witTypes.Option[string], TaskError] {
	return flowhost.Revert(args, config, outcome, failures)
}
