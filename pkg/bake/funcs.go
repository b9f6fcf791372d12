package bake

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"golang.org/x/crypto/bcrypt"
)

// This file holds the functions an HCL2 recipe can call: go-cty's function
// library under the names Packer gives it, plus Packer's own functions
// written for kiln. A recipe is code from whoever can write to the recipe
// bucket, evaluated inside kiln's Lambdas, so:
//   - env() reads only LoadOptions.Env, and only in variable defaults, as in
//     Packer; the process environment (where the Lambda's AWS credentials
//     live) is out of reach.
//   - file(), templatefile(), fileset() and friends read only through the
//     recipe's root (a RecipeFS): absolute paths, ".." above the root and
//     links out of it are errors. path.root and path.cwd are ".", and
//     abspath() answers recipe-relative paths, so no host path leaks.
//   - Nothing runs a command or reaches the network: Packer's vault,
//     consul_key and aws_secretsmanager functions are errors that say so.

// funcEnv is what the functions of one load see.
type funcEnv struct {
	fsys fs.FS
	// read records every recipe file a function read, for the plan's Files.
	read    map[string]bool
	env     map[string]string
	now     time.Time
	newUUID func() string
}

// functions returns the function table. withEnv adds env(), which Packer
// allows only in variable defaults.
func (e *funcEnv) functions(withEnv bool) map[string]function.Function {
	funcs := map[string]function.Function{
		"abs":              stdlib.AbsoluteFunc,
		"abspath":          e.absPathFunc(),
		"alltrue":          allTrueFunc,
		"anytrue":          anyTrueFunc,
		"basename":         pathFunc("basename", path.Base),
		"base64decode":     base64DecodeFunc,
		"base64encode":     base64EncodeFunc,
		"base64gzip":       base64GzipFunc,
		"base64sha256":     hashFunc("base64sha256", sha256.New, base64.StdEncoding.EncodeToString),
		"base64sha512":     hashFunc("base64sha512", sha512.New, base64.StdEncoding.EncodeToString),
		"bcrypt":           bcryptFunc,
		"can":              tryfunc.CanFunc,
		"ceil":             stdlib.CeilFunc,
		"chomp":            stdlib.ChompFunc,
		"chunklist":        stdlib.ChunklistFunc,
		"coalesce":         coalesceFunc,
		"coalescelist":     stdlib.CoalesceListFunc,
		"compact":          stdlib.CompactFunc,
		"concat":           stdlib.ConcatFunc,
		"contains":         stdlib.ContainsFunc,
		"convert":          typeexpr.ConvertFunc,
		"csvdecode":        stdlib.CSVDecodeFunc,
		"dirname":          pathFunc("dirname", path.Dir),
		"distinct":         stdlib.DistinctFunc,
		"element":          stdlib.ElementFunc,
		"endswith":         stringTestFunc(strings.HasSuffix),
		"file":             e.fileFunc("file", func(b []byte) (cty.Value, error) { return utf8Value(b) }),
		"filebase64":       e.fileFunc("filebase64", encodeValue(base64.StdEncoding.EncodeToString)),
		"filebase64sha256": e.fileFunc("filebase64sha256", digestValue(sha256.New, base64.StdEncoding.EncodeToString)),
		"filebase64sha512": e.fileFunc("filebase64sha512", digestValue(sha512.New, base64.StdEncoding.EncodeToString)),
		"fileexists":       e.fileExistsFunc(),
		"filemd5":          e.fileFunc("filemd5", digestValue(md5.New, hex.EncodeToString)),
		"fileset":          e.filesetFunc(),
		"filesha1":         e.fileFunc("filesha1", digestValue(sha1.New, hex.EncodeToString)),
		"filesha256":       e.fileFunc("filesha256", digestValue(sha256.New, hex.EncodeToString)),
		"filesha512":       e.fileFunc("filesha512", digestValue(sha512.New, hex.EncodeToString)),
		"flatten":          stdlib.FlattenFunc,
		"floor":            stdlib.FloorFunc,
		"format":           stdlib.FormatFunc,
		"formatdate":       stdlib.FormatDateFunc,
		"formatlist":       stdlib.FormatListFunc,
		"indent":           stdlib.IndentFunc,
		"index":            indexFunc,
		"join":             stdlib.JoinFunc,
		"jsondecode":       stdlib.JSONDecodeFunc,
		"jsonencode":       stdlib.JSONEncodeFunc,
		"keys":             stdlib.KeysFunc,
		"legacy_isotime":   legacyIsotimeFunc,
		"length":           lengthFunc,
		"log":              stdlib.LogFunc,
		"lookup":           stdlib.LookupFunc,
		"lower":            stdlib.LowerFunc,
		"max":              stdlib.MaxFunc,
		"md5":              hashFunc("md5", md5.New, hex.EncodeToString),
		"merge":            stdlib.MergeFunc,
		"min":              stdlib.MinFunc,
		"parseint":         stdlib.ParseIntFunc,
		"pow":              stdlib.PowFunc,
		"range":            stdlib.RangeFunc,
		"regex":            stdlib.RegexFunc,
		"regexall":         stdlib.RegexAllFunc,
		"regex_replace":    stdlib.RegexReplaceFunc,
		"replace":          stdlib.ReplaceFunc,
		"reverse":          stdlib.ReverseListFunc,
		"setintersection":  stdlib.SetIntersectionFunc,
		"setproduct":       stdlib.SetProductFunc,
		"setsubtract":      stdlib.SetSubtractFunc,
		"setunion":         stdlib.SetUnionFunc,
		"sha1":             hashFunc("sha1", sha1.New, hex.EncodeToString),
		"sha256":           hashFunc("sha256", sha256.New, hex.EncodeToString),
		"sha512":           hashFunc("sha512", sha512.New, hex.EncodeToString),
		"signum":           stdlib.SignumFunc,
		"slice":            stdlib.SliceFunc,
		"sort":             stdlib.SortFunc,
		"split":            stdlib.SplitFunc,
		"startswith":       stringTestFunc(strings.HasPrefix),
		"strcontains":      stringTestFunc(strings.Contains),
		"strrev":           stdlib.ReverseFunc,
		"substr":           stdlib.SubstrFunc,
		"sum":              sumFunc,
		"timeadd":          stdlib.TimeAddFunc,
		"timestamp":        e.timestampFunc(),
		"title":            stdlib.TitleFunc,
		"trim":             stdlib.TrimFunc,
		"trimprefix":       stdlib.TrimPrefixFunc,
		"trimspace":        stdlib.TrimSpaceFunc,
		"trimsuffix":       stdlib.TrimSuffixFunc,
		"try":              tryfunc.TryFunc,
		"upper":            stdlib.UpperFunc,
		"urlencode":        urlEncodeFunc,
		"uuidv4":           e.uuidv4Func(),
		"uuidv5":           uuidv5Func,
		"values":           stdlib.ValuesFunc,
		"zipmap":           stdlib.ZipmapFunc,

		"env": refusedFunc("env() can only be used in a variable's default, as in Packer: " +
			"declare a variable with default = env(\"NAME\") and use var.NAME."),
		"pathexpand": refusedFunc("kiln reads files only inside the recipe: there is no home folder to expand."),
		"aws_secretsmanager": refusedFunc("kiln does not call AWS or any other service while loading a recipe. " +
			"Read the secret on the build instance at build time instead (for example with the AWS CLI, through iam_instance_profile)."),
		"aws_secretsmanager_raw": refusedFunc("kiln does not call AWS or any other service while loading a recipe. " +
			"Read the secret on the build instance at build time instead (for example with the AWS CLI, through iam_instance_profile)."),
		"vault":      refusedFunc("kiln does not call Vault or any other service while loading a recipe."),
		"consul_key": refusedFunc("kiln does not call Consul or any other service while loading a recipe."),
	}
	if withEnv {
		funcs["env"] = e.envFunc()
	}
	// templatefile sees every function but itself (and env), so a template
	// cannot recurse, as in Packer and Terraform.
	inner := make(map[string]function.Function, len(funcs))
	for k, v := range funcs {
		inner[k] = v
	}
	inner["templatefile"] = refusedFunc("templatefile cannot be called from inside a template.")
	inner["env"] = refusedFunc("env() can only be used in a variable's default.")
	funcs["templatefile"] = e.templateFileFunc(inner)
	return funcs
}

// refusedFunc is a function kiln knows from Packer and refuses: calling it
// is an error that says why.
func refusedFunc(why string) function.Function {
	return function.New(&function.Spec{
		VarParam: &function.Parameter{
			Name: "args", Type: cty.DynamicPseudoType,
			AllowNull: true, AllowUnknown: true, AllowDynamicType: true, AllowMarked: true,
		},
		Type: func([]cty.Value) (cty.Type, error) { return cty.NilType, errors.New(why) },
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) { return cty.NilVal, errors.New(why) },
	})
}

// envFunc is Packer's env(name), reading only LoadOptions.Env: "" when
// unset, as in Packer.
func (e *funcEnv) envFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(e.env[args[0].AsString()]), nil
		},
	})
}

// timestampFunc is Packer's timestamp(): the load's time (LoadOptions.Now)
// in RFC 3339, UTC.
func (e *funcEnv) timestampFunc() function.Function {
	return function.New(&function.Spec{
		Type: function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.StringVal(e.now.UTC().Format(time.RFC3339)), nil
		},
	})
}

func (e *funcEnv) uuidv4Func() function.Function {
	return function.New(&function.Spec{
		Type: function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.StringVal(e.newUUID()), nil
		},
	})
}

// uuidv5Func is uuidv5(namespace, name): namespace is "dns", "url", "oid",
// "x500" or a UUID.
var uuidv5Func = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "namespace", Type: cty.String}, {Name: "name", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		var ns uuid.UUID
		switch s := args[0].AsString(); s {
		case "dns":
			ns = uuid.NameSpaceDNS
		case "url":
			ns = uuid.NameSpaceURL
		case "oid":
			ns = uuid.NameSpaceOID
		case "x500":
			ns = uuid.NameSpaceX500
		default:
			var err error
			if ns, err = uuid.Parse(s); err != nil {
				return cty.NilVal, fmt.Errorf("uuidv5: namespace %q is not dns, url, oid, x500 or a UUID", s)
			}
		}
		return cty.StringVal(uuid.NewSHA1(ns, []byte(args[1].AsString())).String()), nil
	},
})

// recipePathArg resolves a path argument inside the recipe root.
func recipePathArg(fn string, v cty.Value) (string, error) {
	p := v.AsString()
	clean, err := ResolvePath(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w; a recipe reads only files inside its folder or bundle", fn, err)
	}
	return clean, nil
}

// readRecipeFile reads a file of the recipe and records it.
func (e *funcEnv) readRecipeFile(fn string, v cty.Value) ([]byte, error) {
	clean, err := recipePathArg(fn, v)
	if err != nil {
		return nil, err
	}
	if e.fsys == nil {
		return nil, fmt.Errorf("%s: no such file %q", fn, v.AsString())
	}
	b, err := fs.ReadFile(e.fsys, clean)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read %q: %v", fn, v.AsString(), unwrapPathError(err))
	}
	e.read[clean] = true
	return b, nil
}

// fileFunc is a function of one recipe file's content.
func (e *funcEnv) fileFunc(name string, f func([]byte) (cty.Value, error)) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, err := e.readRecipeFile(name, args[0])
			if err != nil {
				return cty.NilVal, err
			}
			v, err := f(b)
			if err != nil {
				return cty.NilVal, fmt.Errorf("%s: %q: %w", name, args[0].AsString(), err)
			}
			return v, nil
		},
	})
}

func utf8Value(b []byte) (cty.Value, error) {
	if !utf8.Valid(b) {
		return cty.NilVal, errors.New("contents are not valid UTF-8; use filebase64 for binary files")
	}
	return cty.StringVal(string(b)), nil
}

func encodeValue(enc func([]byte) string) func([]byte) (cty.Value, error) {
	return func(b []byte) (cty.Value, error) { return cty.StringVal(enc(b)), nil }
}

func digestValue(h func() hash.Hash, enc func([]byte) string) func([]byte) (cty.Value, error) {
	return func(b []byte) (cty.Value, error) {
		d := h()
		d.Write(b)
		return cty.StringVal(enc(d.Sum(nil))), nil
	}
}

// fileExistsFunc is fileexists(path): whether a regular file exists in the
// recipe. A folder is an error, as in Terraform.
func (e *funcEnv) fileExistsFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			clean, err := recipePathArg("fileexists", args[0])
			if err != nil {
				return cty.NilVal, err
			}
			if e.fsys == nil {
				return cty.False, nil
			}
			fi, err := fs.Stat(e.fsys, clean)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return cty.False, nil
			case err != nil:
				return cty.NilVal, fmt.Errorf("fileexists: %q: %v", args[0].AsString(), unwrapPathError(err))
			case !fi.Mode().IsRegular():
				return cty.NilVal, fmt.Errorf("fileexists: %q is not a regular file", args[0].AsString())
			}
			e.read[clean] = true
			return cty.True, nil
		},
	})
}

// filesetFunc is fileset(path, pattern), through the recipe root.
func (e *funcEnv) filesetFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "pattern", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Set(cty.String)),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if e.fsys == nil {
				return cty.SetValEmpty(cty.String), nil
			}
			files, err := Fileset(e.fsys, args[0].AsString(), args[1].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			if len(files) == 0 {
				return cty.SetValEmpty(cty.String), nil
			}
			vals := make([]cty.Value, len(files))
			for i, f := range files {
				vals[i] = cty.StringVal(f)
			}
			return cty.SetVal(vals), nil
		},
	})
}

// absPathFunc is abspath(path). kiln answers the path relative to the
// recipe root ("./scripts/../x.sh" is "x.sh", path.root is "."), never a
// host path; a path outside the root is an error.
func (e *funcEnv) absPathFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			clean, err := recipePathArg("abspath", args[0])
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(clean), nil
		},
	})
}

// templateFileFunc is templatefile(path, vars): the file is an HCL template
// evaluated with vars and funcs only.
func (e *funcEnv) templateFileFunc(funcs map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			vars := args[1]
			if !vars.Type().IsObjectType() && !vars.Type().IsMapType() {
				return cty.NilVal, function.NewArgErrorf(1, "vars must be an object or a map")
			}
			if !vars.IsWhollyKnown() {
				return cty.UnknownVal(cty.String), nil
			}
			b, err := e.readRecipeFile("templatefile", args[0])
			if err != nil {
				return cty.NilVal, err
			}
			name, _ := ResolvePath(args[0].AsString())
			expr, diags := hclsyntax.ParseTemplate(b, name, hcl.Pos{Line: 1, Column: 1, Byte: 0})
			if diags.HasErrors() {
				return cty.NilVal, fmt.Errorf("templatefile: %s", diags.Error())
			}
			ctxVars := map[string]cty.Value{}
			for it := vars.ElementIterator(); it.Next(); {
				k, v := it.Element()
				ctxVars[k.AsString()] = v
			}
			for _, t := range expr.Variables() {
				if _, ok := ctxVars[t.RootName()]; !ok {
					return cty.NilVal, fmt.Errorf("templatefile: %s: vars has no %q", t.SourceRange(), t.RootName())
				}
			}
			v, diags := expr.Value(&hcl.EvalContext{Variables: ctxVars, Functions: funcs})
			if diags.HasErrors() {
				return cty.NilVal, fmt.Errorf("templatefile: %s", diags.Error())
			}
			if v.IsNull() {
				return cty.NilVal, errors.New("templatefile: the template produced null")
			}
			return v, nil
		},
	})
}

// pathFunc is a function of a path's text alone (basename, dirname).
func pathFunc(name string, f func(string) string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(f(args[0].AsString())), nil
		},
	})
}

func hashFunc(name string, h func() hash.Hash, enc func([]byte) string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			d := h()
			d.Write([]byte(args[0].AsString()))
			return cty.StringVal(enc(d.Sum(nil))), nil
		},
	})
}

var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

var base64DecodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := base64.StdEncoding.DecodeString(args[0].AsString())
		if err != nil {
			return cty.NilVal, fmt.Errorf("base64decode: %w", err)
		}
		if !utf8.Valid(b) {
			return cty.NilVal, errors.New("base64decode: the result is not valid UTF-8")
		}
		return cty.StringVal(string(b)), nil
	},
})

var base64GzipFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(args[0].AsString()))
		if err := w.Close(); err != nil {
			return cty.NilVal, fmt.Errorf("base64gzip: %w", err)
		}
		return cty.StringVal(base64.StdEncoding.EncodeToString(b.Bytes())), nil
	},
})

// bcryptFunc is bcrypt(str, cost?); the cost is capped at 12 so that a
// recipe cannot make loading arbitrarily slow.
var bcryptFunc = function.New(&function.Spec{
	Params:   []function.Parameter{{Name: "str", Type: cty.String}},
	VarParam: &function.Parameter{Name: "cost", Type: cty.Number},
	Type:     function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		cost := bcrypt.DefaultCost
		if len(args) > 2 {
			return cty.NilVal, errors.New("bcrypt: takes a string and at most one cost")
		}
		if len(args) == 2 {
			c, acc := args[1].AsBigFloat().Int64()
			if acc != 0 || c < int64(bcrypt.MinCost) || c > 12 {
				return cty.NilVal, fmt.Errorf("bcrypt: cost must be a whole number from %d to 12", bcrypt.MinCost)
			}
			cost = int(c)
		}
		b, err := bcrypt.GenerateFromPassword([]byte(args[0].AsString()), cost)
		if err != nil {
			return cty.NilVal, fmt.Errorf("bcrypt: %w", err)
		}
		return cty.StringVal(string(b)), nil
	},
})

var urlEncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(url.QueryEscape(args[0].AsString())), nil
	},
})

// legacyIsotimeFunc is Packer's legacy_isotime(timestamp, format): an RFC
// 3339 time formatted with a Go layout, as {{isotime}} does.
var legacyIsotimeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "timestamp", Type: cty.String}, {Name: "format", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		t, err := time.Parse(time.RFC3339, args[0].AsString())
		if err != nil {
			return cty.NilVal, fmt.Errorf("legacy_isotime: %w", err)
		}
		return cty.StringVal(t.Format(args[1].AsString())), nil
	},
})

// stringTestFunc is startswith, endswith or strcontains.
func stringTestFunc(f func(s, sub string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "substr", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

// lengthFunc is Packer's length: of a string (in characters) or of a
// collection.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true, AllowUnknown: true}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		switch {
		case ty == cty.String, ty == cty.DynamicPseudoType, ty.IsCollectionType(), ty.IsTupleType(), ty.IsObjectType():
			return cty.Number, nil
		}
		return cty.NilType, function.NewArgErrorf(0, "length takes a string, list, set, map, tuple or object")
	},
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v := args[0]
		if !v.IsKnown() {
			return cty.UnknownVal(cty.Number), nil
		}
		if v.Type() == cty.String {
			return stdlib.Strlen(v)
		}
		return stdlib.Length(v)
	},
})

// boolListFunc is alltrue or anytrue.
func boolListFunc(all bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			for it := args[0].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if v.IsNull() {
					continue
				}
				if v.True() != all {
					return cty.BoolVal(!all), nil
				}
			}
			return cty.BoolVal(all), nil
		},
	})
}

var (
	allTrueFunc = boolListFunc(true)
	anyTrueFunc = boolListFunc(false)
)

// sumFunc is sum(list of numbers).
var sumFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Number)}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if args[0].LengthInt() == 0 {
			return cty.NilVal, errors.New("sum: cannot sum an empty list")
		}
		total := cty.Zero
		for it := args[0].ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() {
				return cty.NilVal, errors.New("sum: the list holds null")
			}
			total = total.Add(v)
		}
		return total, nil
	},
})

// coalesceFunc is Packer's (and Terraform's) coalesce: the first argument
// that is neither null nor an empty string.
var coalesceFunc = function.New(&function.Spec{
	VarParam: &function.Parameter{Name: "vals", Type: cty.DynamicPseudoType, AllowNull: true, AllowUnknown: true, AllowDynamicType: true},
	Type: func(args []cty.Value) (cty.Type, error) {
		types := make([]cty.Type, len(args))
		for i, a := range args {
			types[i] = a.Type()
		}
		ty, _ := convert.UnifyUnsafe(types)
		if ty == cty.NilType {
			return cty.NilType, errors.New("coalesce: all arguments must have the same type")
		}
		return ty, nil
	},
	Impl: func(args []cty.Value, ty cty.Type) (cty.Value, error) {
		for _, a := range args {
			if !a.IsKnown() {
				return cty.UnknownVal(ty), nil
			}
			v, err := convert.Convert(a, ty)
			if err != nil {
				return cty.NilVal, fmt.Errorf("coalesce: %w", err)
			}
			if v.IsNull() || (v.Type() == cty.String && v.AsString() == "") {
				continue
			}
			return v, nil
		}
		return cty.NilVal, errors.New("coalesce: no non-null, non-empty-string arguments")
	},
})

// indexFunc is Packer's (and Terraform's) index(list, value): the position
// of the first element equal to value.
var indexFunc = function.New(&function.Spec{
	Params: []function.Parameter{
		{Name: "list", Type: cty.DynamicPseudoType},
		{Name: "value", Type: cty.DynamicPseudoType},
	},
	Type: function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		list := args[0]
		if !list.Type().IsListType() && !list.Type().IsTupleType() {
			return cty.NilVal, function.NewArgErrorf(0, "index takes a list or tuple")
		}
		if !list.IsWhollyKnown() || !args[1].IsWhollyKnown() {
			return cty.UnknownVal(cty.Number), nil
		}
		for it := list.ElementIterator(); it.Next(); {
			i, v := it.Element()
			if v.Type().Equals(args[1].Type()) && v.Equals(args[1]).True() {
				return i, nil
			}
		}
		return cty.NilVal, errors.New("index: the item is not in the list")
	},
})
