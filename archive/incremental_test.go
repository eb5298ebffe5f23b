package archive

import (
	"os"
	"path/filepath"
	"testing"
)

// newBytes is how many bytes of the chunks of layout b are not chunks of
// layout a (what a second push uploads), and b's stream size.
func newBytes(t testing.TB, a, b string) (fresh, total int64) {
	t.Helper()
	have := map[string]bool{}
	for _, d := range manifestOf(t, a).Layers {
		have[d.Digest.String()] = true
	}
	for _, d := range manifestOf(t, b).Layers {
		total += d.Size
		if !have[d.Digest.String()] {
			fresh += d.Size
			have[d.Digest.String()] = true
		}
	}
	return fresh, total
}

// TestIncremental: after 1% of a volume changes (rewritten inside a file,
// or a new file), most chunks are the ones the first archive had. At
// this small scale the chunks around each change (about 2 MiB each)
// weigh more than they do at 1 GiB (see BenchmarkIncremental).
func TestIncremental(t *testing.T) {
	const size, change = 64 << 20, 640 << 10
	v := newVolume(t)
	mnt, unmount := mount(t, v.backing, v.keys)
	for i, n := range []int{size / 2, size / 4, size / 4} {
		must(t, os.WriteFile(filepath.Join(mnt, "file"+string(rune('a'+i))), randomBytes(t, n), 0o644))
	}
	unmount()
	base, _ := writeLayout(t, v.backing, WriteOptions{})
	outer := t

	for _, tc := range []struct {
		name   string
		change func(mnt string)
	}{
		{"rewrite inside a file", func(mnt string) {
			f, err := os.OpenFile(filepath.Join(mnt, "filea"), os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt(randomBytes(t, change), size/5)
			must(t, err)
			must(t, f.Close())
		}},
		{"add a file", func(mnt string) {
			must(t, os.WriteFile(filepath.Join(mnt, "fileb2"), randomBytes(t, change), 0o644))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, unmount := mount(t, v.backing, v.keys)
			tc.change(mnt)
			unmount()
			next, _ := writeLayout(outer, v.backing, WriteOptions{}) // the next case compares with it
			fresh, total := newBytes(t, base, next)
			frac := float64(fresh) / float64(total)
			t.Logf("%.1f%% changed: %d of %d bytes in new chunks (%.1f%%)", 100.0*change/size, fresh, total, 100*frac)
			if fresh < change || frac > 0.10 {
				t.Errorf("new chunks hold %.1f%% of the stream", 100*frac)
			}
			base = next
		})
	}
}
