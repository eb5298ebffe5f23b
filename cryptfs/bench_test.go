package cryptfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Throughput through a mount, next to the same work on the plain backing
// file system. `make bench` compares whole workloads across file systems;
// these are for quick iterations on the data path:
//
//	go test -run XXX -bench . ./cryptfs

const benchFileSize = 256 << 20

// benchTargets yields a plain directory, a mounted one, one mounted with a
// size limit (that is never reached: the cost of counting), and one with a
// Freezer (never frozen: the cost of the gate).
func benchTargets(b *testing.B, fn func(b *testing.B, dir string, drop func())) {
	b.Run("plain", func(b *testing.B) {
		fn(b, b.TempDir(), func() {})
	})
	b.Run("securevol", func(b *testing.B) {
		m := newTestMount(b)
		fn(b, m.dir, m.remount)
	})
	b.Run("securevol-limit", func(b *testing.B) {
		m := newTestMountOpts(b, Options{Quota: NewQuota(1 << 50)})
		fn(b, m.dir, m.remount)
	})
	b.Run("securevol-freezer", func(b *testing.B) {
		m := newTestMountOpts(b, Options{Freezer: NewFreezer()})
		fn(b, m.dir, m.remount)
	})
}

func BenchmarkSeqWrite(b *testing.B) {
	benchTargets(b, func(b *testing.B, dir string, _ func()) {
		buf := pattern(1, 1<<20)
		b.SetBytes(benchFileSize)
		for i := 0; i < b.N; i++ {
			f, err := os.Create(filepath.Join(dir, "seq"))
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < benchFileSize; off += len(buf) {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}

// BenchmarkAppend4K appends 4 KiB at a time: one WRITE request per block,
// where per-request costs show most.
func BenchmarkAppend4K(b *testing.B) {
	benchTargets(b, func(b *testing.B, dir string, _ func()) {
		f, err := os.Create(filepath.Join(dir, "log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := pattern(1, 4096)
		b.SetBytes(int64(len(buf)))
		for i := 0; i < b.N; i++ {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSeqRead(b *testing.B) {
	benchTargets(b, func(b *testing.B, dir string, drop func()) {
		p := filepath.Join(dir, "seq")
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		buf := pattern(1, 1<<20)
		for off := 0; off < benchFileSize; off += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		b.SetBytes(benchFileSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			drop() // the plaintext page cache; the backing one stays warm
			b.StartTimer()
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, f, buf)
			f.Close()
			if err != nil || n != benchFileSize {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
}

// BenchmarkCreateSmall creates, writes and closes small files, the
// pattern of untarring a source tree.
func BenchmarkCreateSmall(b *testing.B) {
	benchTargets(b, func(b *testing.B, dir string, _ func()) {
		data := pattern(2, 3000)
		for i := 0; i < b.N; i++ {
			d := filepath.Join(dir, fmt.Sprint(i/1000))
			if i%1000 == 0 {
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file%d.go", i)), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	})
}
