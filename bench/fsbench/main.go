// Command fsbench measures the same file-system workloads on a plain
// directory, a securevol mount and a gocryptfs mount in one run, and prints
// their medians with ratios to the plain directory and the targets.
//
// All backing folders live under one scratch directory, so every
// filesystem writes to the same disk. Rounds interleave the filesystems
// (and rotate their order) so that a noisy neighbour on a small VM hits all
// of them alike. It needs root: it drops the page cache between steps.
//
//	go run ./bench/fsbench -securevol bin/securevol [-rounds 3] [-scratch DIR]
//
// `make bench` runs it. Two flags help find what bounds a workload:
// -opcounts mounts with FUSE request logging and prints how many requests
// of each kind every step sent (timings are then meaningless), and -perf
// records each daemon with perf(1) during every step of the first round
// (build securevol without -ldflags '-s -w' so perf finds its symbols):
//
//	go build -o /tmp/securevol-prof ./cmd/plugin
//	go run ./bench/fsbench -fs plain,securevol -securevol /tmp/securevol-prof -rounds 1 -perf
//	perf report -i /var/tmp/securevol-bench/perf/securevol-untar.data --children
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/securevol/securevol/internal/mountinfo"
)

type config struct {
	scratch      string
	securevol    string
	baseline     string // another securevol build, measured side by side
	gocryptfs    string
	tarSrc       string
	rounds       int
	sizeMiB      int
	filesystems  []string
	workloads    map[string]bool // nil: all
	keep         bool
	mountArgs    []string // extra arguments for `securevol mount`
	opcounts     bool     // mount with FUSE debug logs and count requests per step
	perf         bool     // perf record each mount daemon during each step of round 1
	mountTimeout time.Duration
	dbDuration   time.Duration // timed part of each database row (fio, sqlite, pgbench)
	postgres     *postgres     // for the pgbench rows
	otherUsers   bool          // mounts must let the postgres user in
}

func main() {
	os.Exit(run())
}

func run() int {
	var cfg config
	var fsList, wlList, mountArgs string
	flag.StringVar(&cfg.scratch, "scratch", "/var/tmp/securevol-bench", "scratch directory holding every backing folder and the tarball (all on one filesystem)")
	flag.StringVar(&cfg.securevol, "securevol", "bin/securevol", "securevol binary (make build)")
	flag.StringVar(&cfg.baseline, "baseline", "", "another securevol binary (e.g. built from main before a change) to measure side by side as filesystem \"baseline\"")
	flag.StringVar(&cfg.gocryptfs, "gocryptfs", "gocryptfs", "gocryptfs binary")
	flag.StringVar(&cfg.tarSrc, "tar-src", filepath.Join(runtime.GOROOT(), "src"), "source tree to tar once and untar in every round")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds per filesystem; the median is reported")
	flag.IntVar(&cfg.sizeMiB, "size", 512, "MiB written and read by the sequential workloads")
	flag.StringVar(&fsList, "fs", "plain,securevol,gocryptfs", "filesystems to measure (plain is needed for ratios)")
	flag.StringVar(&wlList, "workloads", "", "comma-separated subset of workloads ("+strings.Join(workloadKeys(), ",")+"); default all")
	flag.StringVar(&mountArgs, "securevol-mount-args", "", "extra arguments for `securevol mount`, space separated (e.g. --debug)")
	flag.BoolVar(&cfg.opcounts, "opcounts", false, "mount with FUSE request logging (securevol --debug, gocryptfs -fusedebug) and count requests per workload; timings are then not comparable")
	flag.BoolVar(&cfg.perf, "perf", false, "perf record (call graphs) each mount daemon during each workload of the first round, into SCRATCH/perf/FS-WORKLOAD.data (build securevol without -s -w for symbols); implies -keep")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the backing folders after the run (the tarball is always kept)")
	flag.DurationVar(&cfg.dbDuration, "db-time", 15*time.Second, "how long fio (randwrite), the SQLite transaction loop and pgbench each run per filesystem and round (whole seconds)")
	flag.DurationVar(&cfg.mountTimeout, "mount-timeout", 30*time.Second, "how long to wait for a mount to appear")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "fsbench: unexpected arguments %q\n", flag.Args())
		return 2
	}
	if cfg.rounds < 1 || cfg.sizeMiB < 1 || cfg.dbDuration < time.Second {
		fmt.Fprintln(os.Stderr, "fsbench: -rounds and -size must be at least 1, -db-time at least 1s")
		return 2
	}
	for _, f := range strings.Split(fsList, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.filesystems = append(cfg.filesystems, f)
		}
	}
	if wlList != "" {
		cfg.workloads = map[string]bool{}
		for _, w := range strings.Split(wlList, ",") {
			cfg.workloads[strings.TrimSpace(w)] = true
		}
	}
	if cfg.baseline != "" && !slices.Contains(cfg.filesystems, "baseline") {
		cfg.filesystems = append(cfg.filesystems, "baseline")
	}
	cfg.mountArgs = strings.Fields(mountArgs)
	if cfg.perf {
		cfg.keep = true
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()

	rep, err := bench(ctx, cfg)
	if rep != nil {
		rep.print(os.Stdout)
	}
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "fsbench: interrupted; mounts cleaned up")
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "fsbench: %v\n", err)
		return 1
	case rep != nil && rep.failed():
		fmt.Fprintln(os.Stderr, "fsbench: some filesystems could not be measured (see above)")
		return 1
	}
	return 0
}

// bench sets up every filesystem, runs the rounds and tears everything
// down again, whatever happens.
func bench(ctx context.Context, cfg config) (rep *report, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (it drops the page cache and mounts FUSE filesystems)")
	}
	var err2 error
	if cfg.scratch, err2 = filepath.Abs(cfg.scratch); err2 != nil {
		return nil, err2
	}
	if cfg.securevol, err2 = filepath.Abs(cfg.securevol); err2 != nil {
		return nil, err2
	}
	wls, err := selectWorkloads(cfg.workloads)
	if err != nil {
		return nil, err
	}
	if err := preflight(&cfg, wls); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.scratch, 0o700); err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	if cfg.otherUsers {
		// The postgres user must pass through (not list) the scratch
		// folder to reach its data directories.
		if err := os.Chmod(cfg.scratch, 0o711); err != nil {
			return nil, fmt.Errorf("scratch: %w", err)
		}
	}
	// A run killed with SIGKILL can leave mounts behind; removing the
	// folders under them would go through the mount.
	if err := unmountUnder(cfg.scratch); err != nil {
		return nil, err
	}

	src, err := prepareTarball(ctx, cfg.scratch, cfg.tarSrc)
	if err != nil {
		return nil, err
	}

	rep = newReport(cfg, wls, src)
	var fss []*filesystem
	defer func() {
		for _, f := range fss {
			if terr := f.teardown(); terr != nil {
				fmt.Fprintf(os.Stderr, "fsbench: %s: %v\n", f.name, terr)
				rep.setFailed(f.name, terr)
			}
			// Never remove through a mount that would not go away.
			if m, err := mountinfo.At(f.root); !cfg.keep && err == nil && m == nil {
				os.RemoveAll(f.base)
			}
		}
	}()
	for _, name := range cfg.filesystems {
		f, err := newFilesystem(name, cfg)
		if err != nil {
			return rep, err
		}
		fss = append(fss, f)
		fmt.Fprintf(os.Stderr, "fsbench: setting up %s\n", name)
		if err := f.setup(ctx); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			fmt.Fprintf(os.Stderr, "fsbench: %s: %v\n", name, err)
			rep.setFailed(name, err)
			f.teardown() // its error repeats the one just reported
		}
	}
	rep.versions = versions(cfg, fss)
	rep.loadBefore = loadavg()
	defer func() { rep.loadAfter = loadavg() }()

	for r := 0; r < cfg.rounds; r++ {
		// Rotate the order so no filesystem always runs first (on a
		// fresher page cache) or last.
		for i := range fss {
			f := fss[(i+r)%len(fss)]
			if rep.isFailed(f.name) {
				continue
			}
			fmt.Fprintf(os.Stderr, "fsbench: round %d/%d: %s\n", r+1, cfg.rounds, f.name)
			if err := runRound(ctx, f, wls, src, r, rep); err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				fmt.Fprintf(os.Stderr, "fsbench: %s: %v\n", f.name, err)
				rep.setFailed(f.name, err)
			}
		}
	}
	return rep, nil
}

// preflight finds the programs the chosen workloads run, so a missing one
// fails the run before any filesystem is set up.
func preflight(cfg *config, wls []*workload) error {
	progs := map[string]string{"untar": "tar", "lscold": "ls", "randwrite": "fio", "sqliteload": "sqlite3"}
	for _, w := range wls {
		if p := progs[w.key]; p != "" {
			if _, err := exec.LookPath(p); err != nil {
				return fmt.Errorf("workload %s needs %s (Debian package %s): %w", w.key, p, debianPackage(p), err)
			}
		}
		if w.key == "pgload" {
			pg, err := findPostgres()
			if err != nil {
				return err
			}
			cfg.postgres, cfg.otherUsers = pg, true
		}
	}
	return nil
}

func debianPackage(prog string) string {
	if prog == "ls" {
		return "coreutils"
	}
	return prog
}
