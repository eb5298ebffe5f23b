package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Docker benchmarks compare securevol (the managed plugin built from
// this tree) with the engine's local driver, side by side in one run, on
// the same disk. make bench-docker runs them:
//
//	go test -run '^$' -bench Docker -benchtime 20x ./e2e
//
// Each iteration (a round) does the work once on each driver, alternating,
// so drift (page cache, other load) hits both alike. Besides ns/op (the
// pair) they report per-driver medians with their min–max, and the
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
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, d := range pairOrder(i) {
			times[d] = append(times[d], runOnce(vols[d]))
		}
	}
	b.StopTimer()
	reportPair(b, "ms/run", times, func(d time.Duration) float64 { return float64(d) / 1e6 }, false)
}

// BenchmarkDockerIO1GiB: 1 GiB written through a container with dd
// conv=fsync, caches dropped, then read back, on each driver. Timed inside
// the container (/proc/uptime), so container start-up is not counted.
// Targets (issue 8): write ≥ 0.85× local, read ≥ 0.8× local.
func BenchmarkDockerIO1GiB(b *testing.B) {
	ctrs := sleeperPair(b)
	const mib = 1024
	write := map[string][]float64{}
	read := map[string][]float64{}
	b.SetBytes(2 * 2 * mib << 20) // per iteration: 1 GiB written and read, on two drivers
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
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
	b.StopTimer()
	reportPair(b, "write-MiB/s", write, func(v float64) float64 { return v }, true)
	reportPair(b, "read-MiB/s", read, func(v float64) float64 { return v }, true)
}

// BenchmarkDockerSmallFiles: many small files through a container, the
// container side of make bench's untar and rm -rf rows: busybox sh creates
// smallFiles files of a few bytes (echo is a shell builtin, so no process
// per file) and syncs, then rm -rf removes them. Targets (issue 8, for
// untar and rm on the host): create ≤ 3×, rm ≤ 2× local's time.
func BenchmarkDockerSmallFiles(b *testing.B) {
	ctrs := sleeperPair(b)
	const smallFiles = 2000
	create := map[string][]float64{}
	remove := map[string][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
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
	b.StopTimer()
	reportPair(b, "create-s", create, func(v float64) float64 { return v }, false)
	reportPair(b, "rm-s", remove, func(v float64) float64 { return v }, false)
}

// sleeperPair starts a sleeping container per driver, each with a fresh
// volume of that driver at /data: the containers by driver name.
func sleeperPair(b *testing.B) map[string]string {
	need(b)
	p := setupManaged(b)
	vols := map[string]string{"local": newLocalVolume(b), "securevol": newVolume(b, p)}
	ctrs := map[string]string{}
	for d, v := range vols {
		ctrs[d] = startSleeper(b, "--network", "none", "-v", v+":/data")
	}
	return ctrs
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
