package fsck

import (
	"os"
	"testing"
)

// TestAttackSparseFile: a regular file extended to a sparse terabyte (which
// costs its planter nothing) is checked within the deadline: the holes of
// the backing file are whole-block holes of the format and need not be
// read. Read block by block, the check would run for hours.
func TestAttackSparseFile(t *testing.T) {
	keys, l := writeTree(t)
	if err := os.Truncate(l.file, 1<<40); err != nil {
		t.Fatal(err)
	}
	rep, ps := checkWithin(t, keys, l.root)
	wantProblem(t, ps, "block 2")
	if rep.Blocks < 3 {
		t.Errorf("report %+v: want the file's blocks counted", rep)
	}
}
