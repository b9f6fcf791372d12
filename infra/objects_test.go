package infra

import (
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// TestObjectPatternsMatchBakeKeys: the object patterns the policies grant
// cover the keys the stages really use, and no other prefix.
func TestObjectPatternsMatchBakeKeys(t *testing.T) {
	for _, c := range []struct {
		pattern string
		key     string
	}{
		{planObjects, bake.PlanKey("web-0123456789ab")},
		{claimObjects, bake.ClaimKey("web-0123456789ab")},
		{manifestObjects, bake.ManifestKey("web-0123456789ab")},
		{stagedObjects, bake.StagedPrefix("web-0123456789ab") + "files/app.conf"},
		{timingsObjects, bake.TimingsKey("web", "app")},
	} {
		// An IAM resource's * matches any characters, / included.
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(c.pattern), `\*`, ".*") + "$")
		if !re.MatchString(c.key) {
			t.Errorf("pattern %q does not cover the key %q", c.pattern, c.key)
		}
		if re.MatchString(bake.PlanKey("x")) && c.pattern != planObjects {
			t.Errorf("pattern %q also covers the stored plans", c.pattern)
		}
	}
}
