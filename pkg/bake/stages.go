package bake

import (
	"io"
	"log/slog"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// AWS builds the real SDK clients the stages use from one aws.Config: in
// Lambda the default config, in local mode one pointed at the emulator.
type AWS struct {
	Config aws.Config
	// S3Options apply to the S3 client (path-style addressing for an
	// emulator).
	S3Options []func(*s3.Options)

	mu   sync.Mutex
	ec2s map[string]*ec2.Client
	ssms map[string]*ssm.Client
}

// EC2 returns the EC2 client of region ("" for the config's Region).
func (a *AWS) EC2(region string) *ec2.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ec2s == nil {
		a.ec2s = map[string]*ec2.Client{}
	}
	if c, ok := a.ec2s[region]; ok {
		return c
	}
	c := ec2.NewFromConfig(a.Config, withRegion[ec2.Options](region, func(o *ec2.Options) *string { return &o.Region }))
	a.ec2s[region] = c
	return c
}

// SSM returns the Parameter Store client of region ("" for the config's).
func (a *AWS) SSM(region string) *ssm.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ssms == nil {
		a.ssms = map[string]*ssm.Client{}
	}
	if c, ok := a.ssms[region]; ok {
		return c
	}
	c := ssm.NewFromConfig(a.Config, withRegion[ssm.Options](region, func(o *ssm.Options) *string { return &o.Region }))
	a.ssms[region] = c
	return c
}

// Logs returns the CloudWatch Logs client of the config's Region; calls
// name their Region per call.
func (a *AWS) Logs() *cloudwatchlogs.Client { return cloudwatchlogs.NewFromConfig(a.Config) }

// S3 returns the S3 client.
func (a *AWS) S3() *s3.Client { return s3.NewFromConfig(a.Config, a.S3Options...) }

// Events returns the EventBridge client of the config's Region.
func (a *AWS) Events() *eventbridge.Client { return eventbridge.NewFromConfig(a.Config) }

func withRegion[O any](region string, field func(*O) *string) func(*O) {
	return func(o *O) {
		if region != "" {
			*field(o) = region
		}
	}
}

// NewLaunch wires the launch stage to real clients.
func NewLaunch(a *AWS, conf Config) *Launch {
	return &Launch{EC2: a.EC2(""), SSM: a.SSM(""), S3: a.S3(), Config: conf}
}

// NewProvision wires the provision stage to real clients.
func NewProvision(a *AWS, conf Config) *Provision {
	s3c := a.S3()
	return &Provision{
		SSM: a.SSM(""), S3: s3c, Config: conf,
		RunCommand: a.SSM(""), Output: a.Logs(), EC2: a.EC2(""), Stage: s3c, Presign: s3.NewPresignClient(s3c),
	}
}

// NewSnapshot wires the snapshot stage to real clients.
func NewSnapshot(a *AWS, conf Config) *Snapshot {
	return &Snapshot{EC2: a.EC2(""), S3: a.S3(), Config: conf}
}

// NewDistribute wires the distribute stage to real clients.
func NewDistribute(a *AWS, conf Config) *Distribute {
	return &Distribute{
		EC2:    func(region string) distributeEC2API { return a.EC2(region) },
		SSM:    func(region string) parameterPutter { return a.SSM(region) },
		S3:     a.S3(),
		Events: a.Events(),
		Config: conf,
	}
}

// NewCleanup wires the cleanup stage to real clients.
func NewCleanup(a *AWS, conf Config) *Cleanup {
	return &Cleanup{EC2: a.EC2(""), SSM: a.SSM(""), S3: a.S3(), Commands: a.SSM(""), Logs: a.Logs(), Config: conf}
}

// NewJSONLogger returns the structured logger the Lambdas use: one JSON
// object per line, which CloudWatch Logs indexes; Handler adds the build's
// identity, stage and action to every line.
func NewJSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, nil))
}
