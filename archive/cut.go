package archive

import (
	"math/bits"
)

// A cut depends on nothing but the chunk's start and the Rabin
// fingerprint of the 64 bytes ending at each position (docs/FORMAT.md,
// "Chunks"): restic/chunker cuts after the first position at least
// MinChunk bytes into the chunk whose fingerprint has its low AverageBits
// bits zero, else at MaxChunk. The fingerprint of a window does not
// depend on what came before it, so the cutter computes it straight on
// the chunk buffer the stream is written into (no reader, no second copy)
// and splits each stretch into lanes: independent fingerprint chains the
// processor runs side by side, where one chain waits on each table lookup.
// It cuts exactly where restic/chunker does (TestCutsLikeRestic).

// windowSize is the fingerprinted window's length.
const windowSize = 64

// polShift is where a fingerprint's top byte starts: Polynomial's degree
// (53, TestCutsLikeRestic) less 8.
const polShift = 53 - 8

// rabin holds the tables for fingerprints modulo Polynomial.
type rabin struct {
	mod [256]uint64 // reduces the byte shifted above the degree
	out [256]uint64 // a byte's share in a window it is the first byte of
}

func newRabin() *rabin {
	pol := uint64(Polynomial)
	const deg = polShift + 8
	r := &rabin{}
	for i := range uint64(256) {
		// (i·x^deg mod P) plus i·x^deg itself, which clears the shifted-out byte.
		r.mod[i] = polMod(i<<deg, pol) | i<<deg
	}
	for i := range uint64(256) {
		d := r.append(0, byte(i))
		for range windowSize - 1 {
			d = r.append(d, 0)
		}
		r.out[i] = d
	}
	return r
}

// polMod is x modulo pol, polynomials over GF(2).
func polMod(x, pol uint64) uint64 {
	deg := bits.Len64(pol) - 1
	for l := bits.Len64(x) - 1; l >= deg; l = bits.Len64(x) - 1 {
		x ^= pol << (l - deg)
	}
	return x
}

// append is the fingerprint d of a sequence with b added at its end.
func (r *rabin) append(d uint64, b byte) uint64 {
	return (d<<8 | uint64(b)) ^ r.mod[byte(d>>polShift)]
}

// window is the fingerprint of w.
func (r *rabin) window(w []byte) uint64 {
	var d uint64
	for _, b := range w {
		d = r.append(d, b)
	}
	return d
}

const cutMask = 1<<AverageBits - 1

// firstCut returns the first p in [from, to) whose window b[p-63:p+1] has
// a fingerprint that cuts, or -1. from must be at least windowSize.
func (r *rabin) firstCut(b []byte, from, to int) int {
	const lanes, minLane = 4, 4 << 10
	l := (to - from) / lanes
	if l < minLane {
		return r.scan(b, from, to)
	}
	s0, s1, s2, s3 := from, from+l, from+2*l, from+3*l
	d0, d1, d2, d3 := r.window(b[s0-windowSize:s0]), r.window(b[s1-windowSize:s1]), r.window(b[s2-windowSize:s2]), r.window(b[s3-windowSize:s3])
	n := l + windowSize // each lane's bytes, with the window before its first position
	w0, w1, w2, w3 := b[s0-windowSize:][:n], b[s1-windowSize:][:n], b[s2-windowSize:][:n], b[s3-windowSize:][:n]
	mod, out := &r.mod, &r.out
	k := 0
	for ; k < l; k++ {
		t0 := d0 ^ out[w0[k]]
		d0 = t0<<8 | uint64(w0[k+windowSize]) ^ mod[byte(t0>>polShift)]
		t1 := d1 ^ out[w1[k]]
		d1 = t1<<8 | uint64(w1[k+windowSize]) ^ mod[byte(t1>>polShift)]
		t2 := d2 ^ out[w2[k]]
		d2 = t2<<8 | uint64(w2[k+windowSize]) ^ mod[byte(t2>>polShift)]
		t3 := d3 ^ out[w3[k]]
		d3 = t3<<8 | uint64(w3[k+windowSize]) ^ mod[byte(t3>>polShift)]
		if d0&cutMask == 0 || d1&cutMask == 0 || d2&cutMask == 0 || d3&cutMask == 0 {
			break
		}
	}
	if k == l {
		return r.scan(b, s3+l, to)
	}
	// A lane cut at its k-th position; an earlier lane may still cut
	// further on in its own positions, which come first.
	for _, s := range []int{s0, s1, s2} {
		if p := r.scan(b, s+k, s+l); p >= 0 {
			return p
		}
	}
	return s3 + k // the lane that cut was the last
}

// scan is firstCut in one lane.
func (r *rabin) scan(b []byte, from, to int) int {
	if from >= to {
		return -1
	}
	d := r.window(b[from-windowSize : from])
	for p := from; p < to; p++ {
		d = r.append(d^r.out[b[p-windowSize]], b[p])
		if d&cutMask == 0 {
			return p
		}
	}
	return -1
}

// cutter is the writer of a stream: it cuts it into chunks and hands each
// to emit, in order. free gives the buffers (capacity MaxChunk) chunks
// are filled in; emit owns each chunk it is given.
type cutter struct {
	r       *rabin
	free    func() []byte
	emit    func([]byte) error
	cur     []byte // the chunk being filled
	scanned int    // no position of cur below this cuts
	size    int64  // bytes written
}

// cutPiece bounds what is copied into a chunk before looking for a cut:
// what follows a cut in the piece is copied once more, into the next
// chunk.
const cutPiece = 64 << 10

func (c *cutter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cur == nil {
			c.cur = c.free()
		}
		k := min(len(p), cutPiece, MaxChunk-len(c.cur))
		c.cur = append(c.cur, p[:k]...)
		p = p[k:]
		if err := c.cut(); err != nil {
			return n - len(p), err
		}
	}
	c.size += int64(n)
	return n, nil
}

// cut emits the chunk being filled if it ends in it.
func (c *cutter) cut() error {
	end := -1
	if from := max(c.scanned, MinChunk-1); from < len(c.cur) {
		if p := c.r.firstCut(c.cur, from, len(c.cur)); p >= 0 {
			end = p + 1
		}
	}
	if end < 0 && len(c.cur) == MaxChunk {
		end = MaxChunk
	}
	if end < 0 {
		c.scanned = len(c.cur)
		return nil
	}
	chunk := c.cur
	c.cur, c.scanned = nil, 0
	if end < len(chunk) {
		c.cur = append(c.free(), chunk[end:]...)
	}
	return c.emit(chunk[:end])
}

// Close emits the last chunk.
func (c *cutter) Close() error {
	if len(c.cur) == 0 {
		return nil
	}
	chunk := c.cur
	c.cur = nil
	return c.emit(chunk)
}
