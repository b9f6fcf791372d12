package bake

import (
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// identityTags are the tags every resource of a build carries.
func identityTags(st State) map[string]string {
	t := map[string]string{TagBuild: st.BuildID}
	if st.Plan != nil {
		t[TagRecipe] = st.Plan.Recipe
	}
	return t
}

// ec2Tags merges the recipe's tags with the build's identity tags (which
// win: a recipe cannot relabel a resource as another build's) into EC2 tags,
// sorted by key so that calls are deterministic.
func ec2Tags(st State, recipe map[string]string) []ec2types.Tag {
	all := map[string]string{}
	maps.Copy(all, recipe)
	maps.Copy(all, identityTags(st))
	tags := make([]ec2types.Tag, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(all[k])})
	}
	return tags
}

// tagSpec is a TagSpecification for resources of type rt.
func tagSpec(rt ec2types.ResourceType, st State, recipe map[string]string) ec2types.TagSpecification {
	return ec2types.TagSpecification{ResourceType: rt, Tags: ec2Tags(st, recipe)}
}

// buildFilter is a Describe* filter selecting the build's resources by tag.
func buildFilter(buildID string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String("tag:" + TagBuild), Values: []string{buildID}}
}
