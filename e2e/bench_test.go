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
// Each iteration does the work once on each driver, alternating, so drift
// (page cache, other load) hits both alike. Besides ns/op (the pair) they
// report per-driver medians and the securevol/local ratio.

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
		order := []string{"local", "securevol"}
		if i%2 == 1 {
			order = []string{"securevol", "local"}
		}
		for _, d := range order {
			times[d] = append(times[d], runOnce(vols[d]))
		}
	}
	b.StopTimer()
	reportPair(b, "ms/run", times, func(d time.Duration) float64 { return float64(d) / 1e6 }, false)
}

// BenchmarkDockerIO1GiB: 1 GiB written through a container with dd
// conv=fsync, caches dropped, then read back, on each driver. Timed inside
// the container (/proc/uptime), so container start-up is not counted.
// Targets (the cryptfs issue's): write ≥ 0.85× local, read ≥ 0.7× local.
func BenchmarkDockerIO1GiB(b *testing.B) {
	need(b)
	p := setupManaged(b)
	vols := map[string]string{"local": newLocalVolume(b), "securevol": newVolume(b, p)}
	ctrs := map[string]string{}
	for d, v := range vols {
		ctrs[d] = startSleeper(b, "--network", "none", "-v", v+":/data")
	}
	const mib = 1024
	write := map[string][]float64{}
	read := map[string][]float64{}
	b.SetBytes(2 * 2 * mib << 20) // per iteration: 1 GiB written and read, on two drivers
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		order := []string{"local", "securevol"}
		if i%2 == 1 {
			order = []string{"securevol", "local"}
		}
		for _, d := range order {
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

// reportPair reports each driver's median of samples and the
// securevol/local ratio of the medians.
func reportPair[T any](b *testing.B, unit string, samples map[string][]T, val func(T) float64, higherIsBetter bool) {
	med := map[string]float64{}
	for d, xs := range samples {
		vs := make([]float64, len(xs))
		for i, x := range xs {
			vs[i] = val(x)
		}
		slices.Sort(vs)
		med[d] = vs[len(vs)/2]
		b.ReportMetric(med[d], d+"-"+unit)
	}
	if med["local"] > 0 {
		b.ReportMetric(med["securevol"]/med["local"], "securevol/local-"+strings.SplitN(unit, "/", 2)[0])
	}
	b.Logf("%s medians over %d rounds: local %.1f, securevol %.1f (%s is better)", unit, len(samples["local"]), med["local"], med["securevol"],
		map[bool]string{true: "higher", false: "lower"}[higherIsBetter])
}
