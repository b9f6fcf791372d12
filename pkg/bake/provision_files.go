package bake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// RecipeSource opens the files of the recipe a build was planned from:
// the scripts, file sources and playbooks that provisioners upload, which
// the plan names by recipe-relative paths. The pipeline reads the recipe
// object from S3 (S3Recipe); local mode and tests hand over the folder
// directly (FSRecipe).
type RecipeSource interface {
	// Open returns the recipe's root for the build st.
	Open(ctx context.Context, st State) (fs.FS, error)
}

// FSRecipe is a RecipeSource that serves one fs.FS, whatever the build:
// the recipe folder in local mode, an fstest.MapFS in a test.
type FSRecipe struct {
	// FS is the recipe's root folder.
	FS fs.FS
}

// Open returns r.FS.
func (r FSRecipe) Open(context.Context, State) (fs.FS, error) {
	if r.FS == nil {
		return nil, fmt.Errorf("no recipe files")
	}
	return r.FS, nil
}

// S3Recipe is a RecipeSource that reads the recipe object st.Recipe (at
// its version, the same object the plan was made from) from S3: a bundle
// (.tar.gz, .tgz, .zip) opens as its root folder, any other object as a
// folder holding just that template.
type S3Recipe struct {
	// S3 reads the recipe object.
	S3 objectGetter
	// Limits bounds the bundle; zero fields take DefaultBundleLimits.
	Limits BundleLimits
}

// recipeCache keeps recipes a warm Lambda has read, by bucket, key and
// version: a versioned object never changes.
var recipeCache sync.Map // "bucket/key@version" -> fs.FS

// Open reads and opens the recipe.
func (r *S3Recipe) Open(ctx context.Context, st State) (fs.FS, error) {
	ref := st.Recipe
	cacheKey := ""
	if ref.Version != "" {
		cacheKey = ref.Bucket + "/" + ref.Key + "@" + ref.Version
		if fsys, ok := recipeCache.Load(cacheKey); ok {
			return fsys.(fs.FS), nil
		}
	}
	in := &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)}
	if ref.Version != "" {
		in.VersionId = aws.String(ref.Version)
	}
	out, err := r.S3.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	defer out.Body.Close()
	limits := r.Limits.withDefaults()
	data, err := io.ReadAll(io.LimitReader(out.Body, limits.MaxCompressedSize+1))
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	if int64(len(data)) > limits.MaxCompressedSize {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w: larger than %d bytes", ref.Bucket, ref.Key, ErrBundleLimit, limits.MaxCompressedSize)
	}
	var fsys fs.FS
	name := path.Base(ref.Key)
	if IsBundleName(ref.Key) {
		fsys, err = OpenRecipeBundle(bytes.NewReader(data), int64(len(data)), name, limits)
	} else {
		fsys, err = NewMemRecipeFS(name, map[string][]byte{name: data})
	}
	if err != nil {
		return nil, fmt.Errorf("open recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	if cacheKey != "" {
		recipeCache.Store(cacheKey, fsys)
	}
	return fsys, nil
}
