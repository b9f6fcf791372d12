package bake

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// Event is what a stage's Lambda receives from the state machine: which of
// the stage's actions to run, and the build state. Region is set for the
// per-Region work of distribute's Map.
type Event struct {
	Action string `json:"action"`
	Region string `json:"region,omitempty"`
	// Execution is the Step Functions execution's ID (plan only): the
	// build's claim records which execution owns it.
	Execution string `json:"execution,omitempty"`
	State     State  `json:"state"`
}

// Action is one step a stage can run: it takes the state and returns it with
// the stage's own part filled in.
type Action func(ctx context.Context, ev Event) (State, error)

// Handler returns a stage's Lambda handler: it runs the event's action, logs
// its start and end with the build's identity, and converts a failure into
// the named error the state machine routes on (ForLambda). The same handler
// serves AWS Lambda and the local runner.
func Handler(stage string, actions map[string]Action, log *slog.Logger) func(context.Context, Event) (State, error) {
	if log == nil {
		log = slog.Default()
	}
	return func(ctx context.Context, ev Event) (State, error) {
		act, ok := actions[ev.Action]
		if !ok {
			names := make([]string, 0, len(actions))
			for n := range actions {
				names = append(names, n)
			}
			sort.Strings(names)
			return ev.State, ForLambda(stage, fmt.Errorf("unknown action %q (have %s)", ev.Action, strings.Join(names, ", ")))
		}
		l := log.With("stage", stage, "action", ev.Action, "build", ev.State.BuildID)
		if ev.Region != "" {
			l = l.With("region", ev.Region)
		}
		ctx = WithLogger(ctx, l)
		l.Info("start")
		st, err := act(ctx, ev)
		if err != nil {
			l.Error("failed", "error", err.Error())
			return st, ForLambda(stage, err)
		}
		if st.Wait != nil && !st.Wait.Ready {
			l.Info("waiting", "for", st.Wait.For, "seconds", st.Wait.Seconds)
		} else {
			l.Info("done")
		}
		return st, nil
	}
}

type loggerKey struct{}

// WithLogger returns ctx carrying log, which stages use for their output
// (provisioner lines, what they created).
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// Logger returns the logger ctx carries, or slog.Default.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
