// Package lambdamain is what every kiln Lambda main does before it starts
// its handler: JSON logs on stdout and AWS clients from the function's
// role. It keeps the mains to their wiring.
package lambdamain

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// Setup returns the function's logger and its AWS clients; if the AWS
// config cannot be loaded, it logs why and exits.
func Setup() (*slog.Logger, *bake.AWS) {
	log := bake.NewJSONLogger(os.Stdout)
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		Exit(log, "load AWS config", err)
	}
	return log, &bake.AWS{Config: cfg}
}

// Exit logs what failed during start-up and ends the process: Lambda
// reports the init error and retries with a fresh one.
func Exit(log *slog.Logger, what string, err error) {
	log.Error(what, "error", err.Error())
	os.Exit(1)
}
