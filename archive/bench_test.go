package archive

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
)

// Export and import next to tar over the same backing folder (`make
// bench`):
//
//	go test -run '^$' -bench ArchiveVsTar -benchtime 3x ./archive
//
// Each round runs `tar -cf` of the folder and Write followed by Pack to a
// file, then `tar -xf` and Unpack followed by Restore (and Restore alone
// from an unpacked layout). The metrics are the speeds relative to tar:
// above 1, faster.

// benchVolume writes a volume of about 250 MiB through a mount: large
// files, medium ones and many small ones in directories.
func benchVolume(b *testing.B) (*volume, int64) { return benchVolumeT(b) }

func benchVolumeT(b testing.TB) (*volume, int64) {
	b.Helper()
	v := newVolume(b)
	mnt, unmount := mount(b, v.backing, v.keys)
	big := randomBytes(b, 32<<20)
	for i := range 6 {
		big[0] = byte(i)
		must(b, os.WriteFile(filepath.Join(mnt, fmt.Sprintf("big%d", i)), big, 0o644))
	}
	for d := range 20 {
		dir := filepath.Join(mnt, fmt.Sprintf("dir%d", d))
		must(b, os.Mkdir(dir, 0o755))
		for i := range 40 {
			must(b, os.WriteFile(filepath.Join(dir, fmt.Sprintf("medium%d", i)), big[i<<16:(i+1)<<16], 0o644))
		}
		for i := range 100 {
			must(b, os.WriteFile(filepath.Join(dir, fmt.Sprintf("small%d", i)), big[i<<11:(i+1)<<11], 0o644))
		}
	}
	unmount()
	size, _, err := usage(v.backing)
	must(b, err)
	return v, size
}

func usage(path string) (size int64, complete bool, err error) {
	err = backing.WithRoot(path, func(root *backing.Dir) error {
		size, complete, err = backing.Usage(root, 1<<30)
		return err
	})
	return size, complete, err
}

// timed runs fn and returns how long it took. Writes of earlier steps are
// flushed first, so that their writeback does not slow this one down.
func timed(b *testing.B, fn func() error) time.Duration {
	b.Helper()
	unix.Sync()
	start := time.Now()
	must(b, fn())
	return time.Since(start)
}

func run(name string, args ...string) func() error {
	return func() error {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", name, err, out)
		}
		return nil
	}
}

func BenchmarkArchiveVsTar(b *testing.B) {
	v, size := benchVolume(b)
	scratch := b.TempDir()
	var tarC, archC, tarX, archX, restore time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round := filepath.Join(scratch, fmt.Sprint(i))
		must(b, os.Mkdir(round, 0o700))
		tarFile, packed := filepath.Join(round, "folder.tar"), filepath.Join(round, "volume.tar")
		layout, unpacked := filepath.Join(round, "layout"), filepath.Join(round, "unpacked")
		untarred, restored, restored2 := filepath.Join(round, "untarred"), filepath.Join(round, "restored"), filepath.Join(round, "restored2")
		for _, d := range []string{untarred, restored, restored2} {
			must(b, os.Mkdir(d, 0o700))
		}

		tarC += timed(b, run("tar", "-cf", tarFile, "-C", v.backing, "."))
		archC += timed(b, func() error {
			return backing.WithRoot(v.backing, func(root *backing.Dir) error {
				if _, err := Write(root, layout, WriteOptions{}); err != nil {
					return err
				}
				f, err := os.Create(packed)
				if err != nil {
					return err
				}
				defer f.Close()
				return Pack(layout, f)
			})
		})
		tarX += timed(b, run("tar", "-xf", tarFile, "-C", untarred))
		archX += timed(b, func() error {
			f, err := os.Open(packed)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := Unpack(f, unpacked); err != nil {
				return err
			}
			return backing.WithRoot(restored, func(root *backing.Dir) error {
				_, err := Restore(unpacked, root)
				return err
			})
		})
		restore += timed(b, func() error {
			return backing.WithRoot(restored2, func(root *backing.Dir) error {
				_, err := Restore(unpacked, root)
				return err
			})
		})
		must(b, os.RemoveAll(round))
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(tarC.Seconds()/archC.Seconds(), "export/tar")
	b.ReportMetric(tarX.Seconds()/archX.Seconds(), "import/untar")
	b.ReportMetric(tarX.Seconds()/restore.Seconds(), "restore/untar")
	b.ReportMetric(mbps(tarC), "tar-c-MB/s")
	b.ReportMetric(mbps(archC), "export-MB/s")
	b.ReportMetric(mbps(tarX), "tar-x-MB/s")
	b.ReportMetric(mbps(archX), "import-MB/s")
	b.ReportMetric(mbps(restore), "restore-MB/s")
}

// BenchmarkIncremental measures what a second archive of a 1 GiB volume
// shares with the first after 1% of it changed (the goal: at most
// 5% of the bytes new):
//
//	go test -run '^$' -bench Incremental -benchtime 1x ./archive
func BenchmarkIncremental(b *testing.B) {
	const size, change = 1 << 30, 10 << 20
	v := newVolume(b)
	mnt, unmount := mount(b, v.backing, v.keys)
	chunk := randomBytes(b, 64<<20)
	for i := range size / len(chunk) {
		chunk[0] = byte(i)
		must(b, os.WriteFile(filepath.Join(mnt, fmt.Sprintf("file%02d", i)), chunk, 0o644))
	}
	unmount()
	base, _ := writeLayout(b, v.backing, WriteOptions{})
	for _, tc := range []struct {
		name   string
		change func(mnt string)
	}{
		{"rewrite-10MiB", func(mnt string) {
			f, err := os.OpenFile(filepath.Join(mnt, "file07"), os.O_WRONLY, 0)
			must(b, err)
			_, err = f.WriteAt(randomBytes(b, change), 20<<20+12345)
			must(b, err)
			must(b, f.Close())
		}},
		{"add-10MiB", func(mnt string) {
			must(b, os.WriteFile(filepath.Join(mnt, "file07b"), randomBytes(b, change), 0o644))
		}},
	} {
		mnt, unmount := mount(b, v.backing, v.keys)
		tc.change(mnt)
		unmount()
		var next string
		outer := b // the next case compares with this layout
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				next, _ = writeLayout(outer, v.backing, WriteOptions{})
			}
			fresh, total := newBytes(b, base, next)
			b.ReportMetric(100*float64(fresh)/float64(total), "%new")
			b.ReportMetric(float64(len(manifestOf(b, next).Layers)), "chunks")
			if fresh*20 > total {
				b.Errorf("%d of %d bytes in new chunks", fresh, total)
			}
		})
		base = next
	}
}
