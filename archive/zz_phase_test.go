package archive
import ("testing";"os";"io";"time";"fmt";"path/filepath";"runtime/pprof";"github.com/securevol/securevol/backing")
func TestZZPhases(t *testing.T) {
	b := &testing.B{}
	_ = b
	v, size := benchVolumeT(t)
	sc := t.TempDir()
	ph := func(name string, fn func() error) {
		f, _ := os.Create("/tmp/prof-"+name)
		pprof.StartCPUProfile(f)
		st := time.Now(); must(t, fn()); d := time.Since(st)
		pprof.StopCPUProfile(); f.Close()
		fmt.Printf("%-10s %6.0f ms %6.0f MB/s\n", name, d.Seconds()*1000, float64(size)/d.Seconds()/1e6)
	}
	ph("walk", func() error { return backing.WithRoot(v.backing, func(r *backing.Dir) error { _, err := walk(r, io.Discard, nil); return err }) })
	lay := filepath.Join(sc, "lay")
	ph("write", func() error { return backing.WithRoot(v.backing, func(r *backing.Dir) error { _, err := Write(r, lay, WriteOptions{}); return err }) })
	ph("open", func() error { _, err := Open(lay); return err })
	ph("pack", func() error { f, _ := os.Create(filepath.Join(sc, "p.tar")); defer f.Close(); return Pack(lay, f) })
	ph("unpack", func() error { f, _ := os.Open(filepath.Join(sc, "p.tar")); defer f.Close(); _, err := Unpack(f, filepath.Join(sc, "un")); return err })
	dst := filepath.Join(sc, "dst"); os.Mkdir(dst, 0o700)
	ph("restore", func() error { return backing.WithRoot(dst, func(r *backing.Dir) error { _, err := Restore(lay, r); return err }) })
	ph("tarc", run("tar", "-cf", filepath.Join(sc, "t.tar"), "-C", v.backing, "."))
	d2 := filepath.Join(sc, "d2"); os.Mkdir(d2, 0o700)
	ph("tarx", run("tar", "-xf", filepath.Join(sc, "t.tar"), "-C", d2))
}
