// Command distribute is kiln's distribute stage as an AWS Lambda function
// (provided.al2023). It only wires: the stage's logic is bake.Distribute.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log := bake.NewJSONLogger(os.Stdout)
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("load AWS config", "error", err.Error())
		os.Exit(1)
	}
	stage := bake.NewDistribute(&bake.AWS{Config: cfg}, bake.ConfigFromEnv())
	lambda.Start(bake.Handler("distribute", stage.Actions(), log))
}
