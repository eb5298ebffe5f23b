package archive

import (
	"bytes"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/restic/chunker"
)

// TestCutsLikeRestic: the cutter cuts streams where restic/chunker with
// the format's parameters does, whatever sizes the stream is written in:
// random data (cuts by fingerprint), zeros (no fingerprint cuts: every
// chunk MaxChunk), a repeated pattern, short streams.
func TestCutsLikeRestic(t *testing.T) {
	if deg := bits.Len64(uint64(Polynomial)) - 1; deg != polShift+8 {
		t.Fatalf("Polynomial has degree %d, polShift is for %d", deg, polShift+8)
	}
	random := make([]byte, 40<<20)
	rand.NewChaCha8([32]byte{9}).Read(random)
	pattern := bytes.Repeat(random[:MinChunk+12345], 9)
	for _, tc := range []struct {
		name   string
		stream []byte
		writes int // largest write
	}{
		{"random", random, 1 << 20},
		{"random-small-writes", random[:12<<20], 777},
		{"random-one-write", random, len(random)},
		{"zeros", make([]byte, 3*MaxChunk+5), 1 << 20},
		{"pattern", pattern, 100 << 10},
		{"short", random[:MinChunk+100], 4096},
		{"tiny", random[:10], 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := resticCuts(t, tc.stream)
			if got := cutterCuts(t, tc.stream, tc.writes); !equalInts(got, want) {
				t.Errorf("chunk sizes %v, restic's %v", got, want)
			}
			if tc.name == "random" && len(want) < 15 {
				t.Errorf("only %d chunks in 40 MiB of random data", len(want))
			}
		})
	}
}

func resticCuts(t *testing.T, stream []byte) []int {
	c := chunker.NewWithBoundaries(bytes.NewReader(stream), Polynomial, MinChunk, MaxChunk)
	c.SetAverageBits(AverageBits)
	var sizes []int
	for {
		ch, err := c.Next(make([]byte, 0, MaxChunk))
		if err == io.EOF {
			return sizes
		}
		must(t, err)
		sizes = append(sizes, int(ch.Length))
	}
}

func cutterCuts(t *testing.T, stream []byte, writes int) []int {
	var sizes []int
	var got []byte
	c := &cutter{r: newRabin(), free: func() []byte { return make([]byte, 0, MaxChunk) }, emit: func(b []byte) error {
		sizes = append(sizes, len(b))
		got = append(got, b...)
		return nil
	}}
	rng := rand.New(rand.NewPCG(1, 2))
	for rest := stream; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(writes))
		_, err := c.Write(rest[:n])
		must(t, err)
		rest = rest[n:]
	}
	must(t, c.Close())
	if !bytes.Equal(got, stream) || c.size != int64(len(stream)) {
		t.Errorf("the chunks are not the stream")
	}
	return sizes
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
