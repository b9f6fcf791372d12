// Command kiln-stack is the CDK app that deploys kiln alone: `npx cdk
// deploy` from the repository root or infra/ runs it (see cdk.json,
// app.sh and docs/deploy.md).
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/kiln-dev/kiln/infra"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kiln-stack:", err)
		os.Exit(1)
	}
}

func run() error {
	defer jsii.Close() // stops the CDK's Node process and removes its temporary files
	app := awscdk.NewApp(nil)
	if _, _, err := infra.NewStack(app, nil); err != nil {
		return err
	}
	app.Synth(nil)
	return nil
}
