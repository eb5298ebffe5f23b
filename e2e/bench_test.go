package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/benchwork"
)

// The Docker benchmarks compare securevol (the managed plugin built from
// this tree) with the engine's local driver, side by side in one run, on
// the same disk. make bench-docker runs them:
//
//	go test -run '^$' -bench Docker -benchtime 20x ./e2e
//
// Each iteration (a round) does the work once on each driver, alternating,
// so drift (page cache, other load) hits both alike. They loop with
// b.Loop, so the function runs once with -benchtime Nx: N rounds, without
// the extra one-round call (and its set-up) that a b.N loop gets first.
// Besides ns/op (the pair) they report per-driver medians with their min–max, and the
// securevol/local ratio taken round by round: its median and range.

// BenchmarkDockerRunTrue: `docker run --rm -v VOL:/data IMAGE true`, the
// cost a volume adds to starting a container (securevol: Mount with a key
// unwrap and a FUSE mount, then Unmount; target ≤ 1.3× local).
func BenchmarkDockerRunTrue(b *testing.B) {
	s := need(b)
	p := setupManaged(b)
	vols := map[string]string{"local": newLocalVolume(b), "securevol": newVolume(b, p)}
	runOnce := func(vol string) time.Duration {
		begin := time.Now()
		if _, err := dockerTry("run", "--rm", "--network", "none", "-v", vol+":/data", s.image, "true"); err != nil {
			b.Fatal(err)
		}
		return time.Since(begin)
	}
	// One warm-up run each: the first Mount of a fresh volume also makes
	// the mountpoint directory.
	runOnce(vols["local"])
	runOnce(vols["securevol"])

	times := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		for _, d := range pairOrder(i) {
			times[d] = append(times[d], runOnce(vols[d]))
		}
	}
	reportPair(b, "ms/run", times, func(d time.Duration) float64 { return float64(d) / 1e6 }, false)
}

// BenchmarkDockerIO1GiB: 1 GiB written through a container with dd
// conv=fsync, caches dropped, then read back, on each driver. Timed inside
// the container (/proc/uptime), so container start-up is not counted.
// Targets (issue 8): write ≥ 0.85× local, read ≥ 0.8× local.
func BenchmarkDockerIO1GiB(b *testing.B) {
	ctrs := sleeperPair(b, need(b).image)
	const mib = 1024
	write := map[string][]float64{}
	read := map[string][]float64{}
	b.SetBytes(2 * 2 * mib << 20) // per iteration: 1 GiB written and read, on two drivers
	for i := 0; b.Loop(); i++ {
		for _, d := range pairOrder(i) {
			c := ctrs[d]
			sec := timedIn(b, c, fmt.Sprintf("rm -f /data/big; dd if=/dev/zero of=/data/big bs=1M count=%d conv=fsync 2>/dev/null", mib))
			write[d] = append(write[d], mib/sec)
			dropCaches(b)
			sec = timedIn(b, c, "dd if=/data/big of=/dev/null bs=1M 2>/dev/null")
			read[d] = append(read[d], mib/sec)
			docker(b, "exec", c, "rm", "-f", "/data/big")
		}
	}
	reportPair(b, "write-MiB/s", write, func(v float64) float64 { return v }, true)
	reportPair(b, "read-MiB/s", read, func(v float64) float64 { return v }, true)
}

// BenchmarkDockerSmallFiles: many small files through a container, the
// container side of make bench's untar and rm -rf rows: busybox sh creates
// smallFiles files of a few bytes (echo is a shell builtin, so no process
// per file) and syncs, then rm -rf removes them. Targets (issue 8, for
// untar and rm on the host): create ≤ 3×, rm ≤ 2× local's time.
func BenchmarkDockerSmallFiles(b *testing.B) {
	ctrs := sleeperPair(b, need(b).image)
	const smallFiles = 2000
	create := map[string][]float64{}
	remove := map[string][]float64{}
	for i := 0; b.Loop(); i++ {
		for _, d := range pairOrder(i) {
			c := ctrs[d]
			create[d] = append(create[d], timedIn(b, c, fmt.Sprintf(
				`mkdir /data/t; i=0; while [ $i -lt %d ]; do echo "file $i" > /data/t/f$i; i=$((i+1)); done; sync`, smallFiles)))
			// The files must all be there, with their content, before
			// they count as created.
			if out := docker(b, "exec", c, "sh", "-c", fmt.Sprintf("ls /data/t | wc -l; cat /data/t/f%d", smallFiles-1)); strings.Fields(out)[0] != strconv.Itoa(smallFiles) || !strings.Contains(out, fmt.Sprintf("file %d", smallFiles-1)) {
				b.Fatalf("%s: after creating %d files: %q", d, smallFiles, out)
			}
			remove[d] = append(remove[d], timedIn(b, c, "rm -rf /data/t"))
			if out := docker(b, "exec", c, "ls", "-A", "/data"); strings.TrimSpace(out) != "" {
				b.Fatalf("%s: /data not empty after rm -rf: %q", d, out)
			}
		}
	}
	reportPair(b, "create-s", create, func(v float64) float64 { return v }, false)
	reportPair(b, "rm-s", remove, func(v float64) float64 { return v }, false)
}

// BenchmarkDockerRandWrite: make bench's randwrite row in a container on
// each driver: fio (benchwork.FioArgs), 4 jobs with a 64 MiB file each,
// random 8 KiB writes with an fdatasync after each, psync, for
// randWriteSeconds. fio lays its files out before the rounds; each round
// rewrites them at random. The value is fio's own IOPS of the timed part,
// checked (benchwork.Verify), and the files are read back whole after
// drop_caches at the end. Target (issue 8): ≥ 0.8× local.
func BenchmarkDockerRandWrite(b *testing.B) {
	const randWriteSeconds = 10
	ctrs := sleeperPair(b, benchImage(b))
	args := benchwork.FioArgs("/data/fio", randWriteSeconds)
	for _, c := range ctrs {
		docker(b, "exec", c, "mkdir", "/data/fio")
		docker(b, "exec", c, "sh", "-c", "fio --create_only=1 "+strings.Join(args, " ")+" >/dev/null && sync")
	}
	iops := map[string][]float64{}
	for i := 0; b.Loop(); i++ {
		for _, d := range pairOrder(i) {
			r, err := benchwork.ParseFio([]byte(docker(b, append([]string{"exec", ctrs[d], "fio"}, args...)...)))
			if err == nil {
				err = r.Verify()
			}
			if err != nil {
				b.Fatalf("%s: %v", d, err)
			}
			iops[d] = append(iops[d], r.IOPS())
		}
	}
	dropCaches(b)
	for d, c := range ctrs {
		for j := 0; j < benchwork.FioJobs; j++ {
			out := docker(b, "exec", c, "sh", "-c", fmt.Sprintf("wc -c < /data/fio/rw.%d.0", j))
			if out != strconv.Itoa(benchwork.FioFileSize) {
				b.Fatalf("%s: fio's file %d reads back %s bytes, want %d", d, j, out, benchwork.FioFileSize)
			}
		}
	}
	reportPair(b, "IOPS", iops, func(v float64) float64 { return v }, true)
}

// BenchmarkDockerSQLite: make bench's SQLite row in a container on each
// driver: the sqlite3 shell on a database in the volume (benchwork: WAL,
// synchronous=FULL, pgbench's tables at scale 5), loaded once (its time is
// reported as load-s, one sample per driver), then per round
// sqliteTxnsPerRound TPC-B-like transactions, each committed on its own,
// read from a script in the container's /tmp and timed inside the
// container. Both drivers run the same script in a round. At the end, after
// drop_caches: integrity, one history row per transaction, and every
// balance column summing to the deltas sent. Target (issue 8): ≥ 0.85×
// local.
func BenchmarkDockerSQLite(b *testing.B) {
	// About 1.5 s on local here (6,000 txn/s), so the 10 ms clock of
	// timedIn is well under 1 %.
	const sqliteTxnsPerRound = 10000
	ctrs := sleeperPair(b, benchImage(b))
	load := map[string][]float64{}
	copyIn(b, ctrs, "load.sql", benchwork.SQLiteLoadSQL())
	for _, d := range pairOrder(0) {
		docker(b, "exec", ctrs[d], "mkdir", "/data/db")
		load[d] = append(load[d], timedIn(b, ctrs[d], "sqlite3 -bail /data/db/bench.db < /tmp/load.sql >/dev/null"))
	}
	tps := map[string][]float64{}
	n, delta := 0, int64(0)
	for i := 0; b.Loop(); i++ {
		// One script per round, the same for both drivers.
		rng := rand.New(rand.NewPCG(uint64(i), 8))
		var sql strings.Builder
		sql.WriteString(benchwork.SQLiteSession)
		for range sqliteTxnsPerRound {
			n++
			txn, dt := benchwork.SQLiteRandTxn(rng, n)
			sql.WriteString(txn)
			delta += dt
		}
		copyIn(b, ctrs, "txn.sql", sql.String())
		for _, d := range pairOrder(i) {
			sec := timedIn(b, ctrs[d], "sqlite3 -bail /data/db/bench.db < /tmp/txn.sql > /tmp/txn.out")
			// The shell stops at the first error (-bail): the last
			// acknowledgement proves every transaction committed.
			if out := docker(b, "exec", ctrs[d], "tail", "-n", "1", "/tmp/txn.out"); out != fmt.Sprintf("done %d", n) {
				b.Fatalf("%s: round %d ended with %q, want \"done %d\"", d, i, out, n)
			}
			tps[d] = append(tps[d], sqliteTxnsPerRound/sec)
		}
	}
	dropCaches(b)
	want := benchwork.SQLiteCheckWant(n, delta)
	copyIn(b, ctrs, "check.sql", benchwork.SQLiteCheckSQL)
	for d, c := range ctrs {
		if out := docker(b, "exec", c, "sh", "-c", "sqlite3 -bail /data/db/bench.db < /tmp/check.sql"); out != want {
			b.Fatalf("%s: after %d transactions: got %q, want %q (integrity; history rows|deltas|accounts|tellers|branches)", d, n, out, want)
		}
	}
	reportPair(b, "load-s", load, func(v float64) float64 { return v }, false)
	reportPair(b, "txn/s", tps, func(v float64) float64 { return v }, true)
}

// copyIn writes content to /tmp/name in each container (its own layer,
// not the volume under test).
func copyIn(b *testing.B, ctrs map[string]string, name, content string) {
	b.Helper()
	f := filepath.Join(b.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, c := range ctrs {
		docker(b, "cp", f, c+":/tmp/"+name)
	}
}

// sleeperPair starts a sleeping container of image per driver, each with
// a fresh volume of that driver at /data: the containers by driver name.
func sleeperPair(b *testing.B, image string) map[string]string {
	need(b)
	p := setupManaged(b)
	vols := map[string]string{"local": newLocalVolume(b), "securevol": newVolume(b, p)}
	ctrs := map[string]string{}
	for d, v := range vols {
		ctrs[d] = start(b, "--network", "none", "-v", v+":/data", image, "sleep", "3600")
	}
	return ctrs
}

// benchImage is the image with fio and sqlite3 (scripts/bench-image.sh,
// cached by tag).
func benchImage(b *testing.B) string {
	f := strings.Fields(script(b, nil, "bench-image.sh"))
	if len(f) == 0 {
		b.Fatal("scripts/bench-image.sh printed no tag")
	}
	return f[len(f)-1]
}

// pairOrder is the order the drivers take turns in round i: alternating,
// so that drift (page cache, other load) hits both alike.
func pairOrder(i int) []string {
	if i%2 == 1 {
		return []string{"securevol", "local"}
	}
	return []string{"local", "securevol"}
}

// newLocalVolume creates a volume of the engine's local driver.
func newLocalVolume(t testing.TB) string {
	t.Helper()
	name := uniq("local")
	docker(t, "volume", "create", "-d", "local", name)
	t.Cleanup(func() { dockerTry("volume", "rm", "-f", name) })
	return name
}

// timedIn runs script in container c and returns the seconds it took, as
// the container's clock (/proc/uptime, 10 ms steps) measures it.
func timedIn(t testing.TB, c, script string) float64 {
	t.Helper()
	out := docker(t, "exec", c, "sh", "-euc",
		`s=$(cut -d' ' -f1 /proc/uptime); `+script+`; e=$(cut -d' ' -f1 /proc/uptime); echo "$s $e"`)
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("timing output %q", out)
	}
	s, err1 := strconv.ParseFloat(f[0], 64)
	e, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || e < s {
		t.Fatalf("timing output %q", out)
	}
	return max(e-s, 0.01)
}

// dropCaches empties the page cache (the FUSE mount's and the backing
// disk's), so the read comes from the disk through the driver.
func dropCaches(t testing.TB) {
	t.Helper()
	if _, err := command(nil, "", "sync"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// reportPair reports each driver's median of samples with its min–max,
// and the securevol/local ratio round by round (sample i of each driver
// ran in the same round): the median ratio as a metric, its range in the
// log and as metrics, so a noisy run shows.
func reportPair[T any](b *testing.B, unit string, samples map[string][]T, val func(T) float64, higherIsBetter bool) {
	vals := map[string][]float64{}
	for d, xs := range samples {
		for _, x := range xs {
			vals[d] = append(vals[d], val(x))
		}
	}
	var ratios []float64
	for i := 0; i < len(vals["local"]) && i < len(vals["securevol"]); i++ {
		if vals["local"][i] > 0 {
			ratios = append(ratios, vals["securevol"][i]/vals["local"][i])
		}
	}
	loc, sv, ra := summarize(vals["local"]), summarize(vals["securevol"]), summarize(ratios)
	b.ReportMetric(loc.med, "local-"+unit)
	b.ReportMetric(sv.med, "securevol-"+unit)
	name := "securevol/local-" + strings.SplitN(unit, "/", 2)[0]
	if len(ratios) > 0 {
		b.ReportMetric(ra.med, name)
		b.ReportMetric(ra.min, name+"-min")
		b.ReportMetric(ra.max, name+"-max")
	}
	b.Logf("%s over %d rounds, median (min–max): local %s, securevol %s; securevol/local per round %s (%s is better)",
		unit, len(ratios), loc, sv, ra, map[bool]string{true: "higher", false: "lower"}[higherIsBetter])
}

// spread is a median with the range around it.
type spread struct{ med, min, max float64 }

func summarize(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(xs))
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med: m, min: s[0], max: s[len(s)-1]}
}

func (s spread) String() string {
	if s.min == s.max {
		return fmt.Sprintf("%.3g", s.med)
	}
	return fmt.Sprintf("%.3g (%.3g–%.3g, spread %.0f %%)", s.med, s.min, s.max, 100*(s.max-s.min)/s.med)
}

func TestBenchSpread(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want string
	}{
		{nil, "0"},
		{[]float64{0.4}, "0.4"},
		{[]float64{0.5, 0.4, 0.3}, "0.4 (0.3–0.5, spread 50 %)"},
		{[]float64{4, 1, 3, 2}, "2.5 (1–4, spread 120 %)"},
	} {
		if got := summarize(tc.in).String(); got != tc.want {
			t.Errorf("summarize(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
