// Command snapshot is kiln's snapshot stage as an AWS Lambda function
// (provided.al2023). It only wires: the stage's logic is bake.Snapshot.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/kiln-dev/kiln/functions/internal/lambdamain"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log, aws := lambdamain.Setup()
	stage := bake.NewSnapshot(aws, bake.ConfigFromEnv())
	lambda.Start(bake.Handler("snapshot", stage.Actions(), log))
}
