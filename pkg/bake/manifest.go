package bake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// BuilderType is the builder_type kiln's manifest entries carry: kiln does
// what Packer's amazon-ebs builder does, and scripts that read Packer
// manifests look for that name.
const BuilderType = "amazon-ebs"

// DefaultManifestOutput is the manifest post-processor's default output
// path, as in Packer.
const DefaultManifestOutput = "packer-manifest.json"

// ManifestDoc is a manifest file in the format of Packer's manifest
// post-processor, byte for byte: the fields, their order and the two-space
// indentation, so that CI scripts written for Packer
// (jq '.builds[-1].artifact_id') read kiln's manifests unchanged.
type ManifestDoc struct {
	// Builds lists one entry per build, oldest first.
	Builds []ManifestEntry `json:"builds"`
	// LastRunUUID is the PackerRunUUID of the last entry written.
	LastRunUUID string `json:"last_run_uuid"`
}

// ManifestEntry is one build in a manifest.
type ManifestEntry struct {
	// Name is the build's source name ("app" for source "amazon-ebs" "app").
	Name string `json:"name"`
	// BuilderType is always "amazon-ebs".
	BuilderType string `json:"builder_type"`
	// BuildTime is the Unix time the entry was written; left out with
	// strip_time.
	BuildTime int64 `json:"build_time,omitempty"`
	// Files is null for AMIs, as in Packer.
	Files []ManifestArtifactFile `json:"files"`
	// ArtifactID is the sorted "region:ami-id" pairs joined by commas.
	ArtifactID string `json:"artifact_id"`
	// PackerRunUUID identifies the run; kiln derives it from the build ID
	// (RunUUID), so a rerun of publish writes the same entry.
	PackerRunUUID string `json:"packer_run_uuid"`
	// CustomData is the post-processor's custom_data (null when unset).
	CustomData map[string]string `json:"custom_data"`
}

// ManifestArtifactFile is an entry of a build's files: an AMI build has
// none, but the type keeps the format complete.
type ManifestArtifactFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// ArtifactID renders an AMI build's artifact_id as Packer's amazon builders
// do: "region:ami-id" for each Region, sorted, joined by commas.
func ArtifactID(images map[string]string) string {
	parts := make([]string, 0, len(images))
	for region, id := range images {
		parts = append(parts, region+":"+id)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// kilnRunNamespace roots the name-based UUIDs of RunUUID.
var kilnRunNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/kiln-dev/kiln/build"))

// RunUUID is the packer_run_uuid of a build's manifest entry: a name-based
// (version 5) UUID of the build ID, so that it is stable across reruns.
func RunUUID(buildID string) string {
	return uuid.NewSHA1(kilnRunNamespace, []byte(buildID)).String()
}

// NewManifestEntry is the entry of a build that made images (Region → AMI
// ID), written at now, shaped by the manifest post-processor pp (nil for
// the defaults). strip_path has nothing to strip: AMI builds have no files.
func NewManifestEntry(b *Build, buildID string, images map[string]string, now time.Time, pp *Manifest) ManifestEntry {
	e := ManifestEntry{
		Name:          b.Name,
		BuilderType:   BuilderType,
		BuildTime:     now.Unix(),
		ArtifactID:    ArtifactID(images),
		PackerRunUUID: RunUUID(buildID),
	}
	if pp != nil {
		if pp.StripTime {
			e.BuildTime = 0
		}
		if len(pp.CustomData) > 0 {
			e.CustomData = maps.Clone(pp.CustomData)
		}
	}
	return e
}

// ParseManifest reads a manifest file; empty input is an empty manifest.
func ParseManifest(data []byte) (*ManifestDoc, error) {
	m := &ManifestDoc{}
	if len(bytes.TrimSpace(data)) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	return m, nil
}

// Add records e as Packer does, appending it to the builds and making its
// run the last. An entry for the same run and build name is replaced
// instead (keeping its build_time), so that rerunning a publish leaves the
// manifest as one run left it.
func (m *ManifestDoc) Add(e ManifestEntry) {
	m.LastRunUUID = e.PackerRunUUID
	for i, old := range m.Builds {
		if old.PackerRunUUID == e.PackerRunUUID && old.Name == e.Name {
			if old.BuildTime != 0 && e.BuildTime != 0 {
				e.BuildTime = old.BuildTime
			}
			m.Builds[i] = e
			return
		}
	}
	m.Builds = append(m.Builds, e)
}

// Encode renders the manifest exactly as Packer writes it: indented by two
// spaces, with no trailing newline.
func (m *ManifestDoc) Encode() ([]byte, error) {
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return out, nil
}

// manifestPostProcessors returns the build's manifest post-processors.
func manifestPostProcessors(b *Build) []*Manifest {
	var out []*Manifest
	for i := range b.PostProcessors {
		pp := &b.PostProcessors[i]
		if pp.Type == "manifest" {
			m := pp.Manifest
			if m == nil {
				m = &Manifest{}
			}
			out = append(out, m)
		}
	}
	return out
}
