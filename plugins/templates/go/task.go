// `{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default).
//
// The helper package flowhost (flowhost/task.go) decodes the arguments and config into the
// types below: input that does not fit fails with `invalid-args` / `invalid-config` before
// execute runs. wit_exports.go and the flowhost_task_* packages are the generated bindings.
package main

import "wit_component/flowhost"

type greetArgs struct {
	Name string `json:"name"`
}

type greetConfig struct {
	Greeting *string `json:"greeting"`
}

func execute(args greetArgs, config greetConfig) (any, error) {
	if args.Name == "" {
		return nil, flowhost.Fail("invalid-args", "`name` must be a non-empty string", nil)
	}
	greeting := "Hello"
	if config.Greeting != nil {
		greeting = *config.Greeting
	}
	flowhost.Log(flowhost.Info, "greeting", "name", args.Name)
	flowhost.Progress(1.0, nil)
	return greeting + ", " + args.Name + "!", nil
}

func init() {
	flowhost.Define(flowhost.Task[greetArgs, greetConfig]{
		Name:        "{{task}}",
		Version:     "0.1.0",
		Description: "Greets `name`",
		Requires:    []string{"name"},
		Provides:    []string{"{{task}}"},
		Execute:     execute,
		// Revert: nothing to undo, greeting has no side effects. A Revert function gets the
		// same input, the outcome and the flow's failures, and may return what it undid.
	})
}
