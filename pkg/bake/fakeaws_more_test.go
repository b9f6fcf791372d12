package bake

// Additions to the shared fake (fakeaws_test.go) that the snapshot and
// distribute tests need.

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// SetImageState forces an image into state with a state reason, as EC2
// reports an image whose creation or copy failed.
func (c *fakeCloud) SetImageState(region, id string, state ec2types.ImageState, code, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img := c.regionLocked(region).images[id]
	if img == nil {
		panic("SetImageState: no image " + id + " in " + region)
	}
	img.State = state
	img.StateReason = &ec2types.StateReason{Code: aws.String(code), Message: aws.String(message)}
}
