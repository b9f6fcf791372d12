// Command kiln-bench turns the output of kiln's benchmarks (go test -bench
// in pkg/local) into one table, keeps the run's figures in a file, and
// shows each figure's change since the last run.
//
//	go test -run '^$' -bench '^BenchmarkBake' -benchtime 1x ./pkg/local/ > bench/raw.txt
//	go run ./cmd/kiln-bench -results bench/results -last bench/last.json < bench/raw.txt
//
// `make bench` does both. Each run is written to RESULTS/<UTC time>.json
// and to LAST; the figures in the table are followed by their change since
// the run LAST held before.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Run is one benchmark run's figures.
type Run struct {
	Time   time.Time `json:"time"`
	Commit string    `json:"commit,omitempty"`
	// Benchmarks maps a benchmark's name (without the -GOMAXPROCS
	// suffix) to its metrics, unit -> value.
	Benchmarks map[string]map[string]float64 `json:"benchmarks"`
}

func main() {
	results := flag.String("results", "bench/results", "folder that keeps every run's figures")
	last := flag.String("last", "bench/last.json", "the last run's figures, compared with and then replaced")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *results, *last, time.Now().UTC()); err != nil {
		fmt.Fprintln(os.Stderr, "kiln-bench:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, results, lastPath string, now time.Time) error {
	cur, err := Parse(in)
	if err != nil {
		return err
	}
	cur.Time = now
	cur.Commit = commit()
	var prev *Run
	if b, err := os.ReadFile(lastPath); err == nil {
		var p Run
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("read %s: %w", lastPath, err)
		}
		prev = &p
	}
	Table(out, cur, prev)
	b, err := json.MarshalIndent(cur, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		return err
	}
	name := filepath.Join(results, now.Format("2006-01-02T15-04-05Z")+".json")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(lastPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nfigures kept in %s and %s\n", name, lastPath)
	return nil
}

// commit is the current git commit, if there is one.
func commit() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// Parse reads go test -bench output: every benchmark line's metrics.
func Parse(r io.Reader) (*Run, error) {
	run := &Run{Benchmarks: map[string]map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		metrics := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark %s: metric %q: %w", m[1], f[i+1], err)
			}
			metrics[f[i+1]] = v
		}
		run.Benchmarks[m[1]] = metrics
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(run.Benchmarks) == 0 {
		return nil, errors.New("no benchmark results in the input")
	}
	return run, nil
}

// bakeColumns are BenchmarkBake's sub-benchmarks, as the table heads them.
var bakeColumns = []struct{ name, head string }{
	{"BenchmarkBake/regions=1", "1 Region"},
	{"BenchmarkBake/regions=5", "5 Regions"},
	{"BenchmarkBake/regions=5,aws=1.07x", "AWS +7%"},
	{"BenchmarkBake/regions=5,aws=0.85x", "AWS -15%"},
	{"BenchmarkBake/regions=5,aws=1.4x", "AWS +40%"},
	{"BenchmarkBake/regions=5,aws=1.4x,learned", "+40% learned"},
}

const scaleName = "BenchmarkBakeScale"

// Table writes the run as one table, each figure followed by its change
// since prev (if prev has it).
func Table(w io.Writer, cur, prev *Run) {
	fmt.Fprintf(w, "kiln benchmark, %s", cur.Time.Format("2006-01-02 15:04 UTC"))
	if cur.Commit != "" {
		fmt.Fprintf(w, " at %s", cur.Commit)
	}
	if prev != nil {
		fmt.Fprintf(w, "; changes since the run of %s", prev.Time.Format("2006-01-02 15:04 UTC"))
		if prev.Commit != "" {
			fmt.Fprintf(w, " at %s", prev.Commit)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "simulated time; AWS takes 30 s to run an instance, 45 s to stop it, 120 s for the image, 300 s per copy, 30 s to terminate")
	fmt.Fprintln(w, "AWS ±N%: 5 Regions, AWS that much slower or faster than kiln expects, a recipe's first bake; learned: its second, planned around what the first took")
	fmt.Fprintln(w)
	// Labels are padded to one width: the table aligns numbers right.
	const labelWidth = 50
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var cols []string
	head := strings.Repeat(" ", labelWidth) + "\t"
	for _, c := range bakeColumns {
		if _, ok := cur.Benchmarks[c.name]; ok {
			cols = append(cols, c.name)
			head += c.head + "\t"
		}
	}
	fmt.Fprintln(tw, head)
	cell := func(name, unit string, digits int) string {
		v, ok := cur.Benchmarks[name][unit]
		if !ok {
			return "-"
		}
		s := strconv.FormatFloat(v, 'f', digits, 64)
		if prev != nil {
			if p, ok := prev.Benchmarks[name][unit]; ok {
				s += " " + change(p, v)
			}
		}
		return s
	}
	row := func(label, unit string, digits int) {
		line := fmt.Sprintf("%-*s\t", labelWidth, label)
		for _, c := range cols {
			line += cell(c, unit, digits) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	row("images published / floor", "published/floor", 4)
	row("execution / floor", "wall/floor", 4)
	row("execution / same AWS work driven directly", "wall/baseline", 4)
	row("  floor: running+stopped+image+slowest copy (s)", "floor-s", 0)
	row("  images published after (s)", "published-s", 0)
	row("  execution done after (s)", "wall-s", 0)
	row("state transitions per bake", "transitions/bake", 0)
	row("Lambda invocations per bake", "invocations/bake", 0)
	row("Lambda GB-seconds per bake", "GB-s/bake", 3)
	row("price per bake (USD)", "USD/bake", 5)
	row("EC2 calls per bake", "ec2-calls/bake", 0)
	actions := map[string]bool{}
	for _, c := range cols {
		for unit := range cur.Benchmarks[c] {
			if strings.HasPrefix(unit, "ec2:") {
				actions[unit] = true
			}
		}
	}
	for _, unit := range slices.Sorted(maps.Keys(actions)) {
		row("  "+strings.TrimSuffix(strings.TrimPrefix(unit, "ec2:"), "/bake"), unit, 0)
	}
	tw.Flush()

	one, five := cur.Benchmarks["BenchmarkBake/regions=1"], cur.Benchmarks["BenchmarkBake/regions=5"]
	if one != nil && five != nil {
		slowest := five["floor-s"] - one["floor-s"]
		growth := five["wall-s"] - one["wall-s"]
		fmt.Fprintf(w, "\nfrom 1 to 5 Regions the execution grows by %.0f s = %.2f× the slowest copy (%.0f s); copying one Region after another would be 4×; 5 Regions take %.2f× as long as 1\n",
			growth, growth/slowest, slowest, five["wall-s"]/one["wall-s"])
	}
	if s, ok := cur.Benchmarks[scaleName]; ok {
		fmt.Fprintf(w, "\nscale: %.0f bakes started at once against EC2's token buckets (communicator none, 1 Region)\n", s["bakes"])
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		srow := func(label, unit string, digits int) {
			fmt.Fprintf(tw, "%-*s\t%s\t\n", labelWidth, label, cell(scaleName, unit, digits))
		}
		srow("failures", "failures", 0)
		srow("resources left behind", "leaks", 0)
		srow("sustained throughput (bakes/h)", "sustained-bakes/h", 0)
		srow("  / RunInstances bound (2/s: 7,200 bakes/h)", "sustained/RunInstances-bound", 3)
		srow("  / mutating-call bound (5/s over mutating calls)", "sustained/mutating-bound", 3)
		srow("  mutating-call bound (bakes/h)", "mutating-bound-bakes/h", 0)
		srow("overall: all bakes over the whole run (bakes/h)", "bakes/h", 0)
		srow("  whole run (s of AWS time)", "makespan-s", 0)
		srow("launches per second", "launches/s", 3)
		srow("calls throttled per bake", "throttled/bake", 2)
		srow("state transitions per bake", "transitions/bake", 1)
		srow("moto's mean answer time (ms, real)", "moto-ms/call", 1)
		tw.Flush()
	}
	var other []string
	for name := range cur.Benchmarks {
		if !strings.HasPrefix(name, "BenchmarkBake/") && name != scaleName {
			other = append(other, name)
		}
	}
	for _, name := range slices.Sorted(slices.Values(other)) {
		fmt.Fprintf(w, "\n%s:", name)
		m := cur.Benchmarks[name]
		for _, unit := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(w, " %s %s", strconv.FormatFloat(m[unit], 'g', 5, 64), unit)
		}
		fmt.Fprintln(w)
	}
}

// change is v's change from p, as a percentage or "=".
func change(p, v float64) string {
	switch {
	case p == v:
		return "(=)"
	case p == 0:
		return "(new)"
	}
	d := (v - p) / math.Abs(p) * 100
	if math.Abs(d) < 0.05 {
		return "(=)"
	}
	return fmt.Sprintf("(%+.1f%%)", d)
}
