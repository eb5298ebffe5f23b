package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/securevol/securevol/internal/testenv"
)

// suite is what every test shares: built once in TestMain.
type suite struct {
	root  string // repository root
	bin   string // the static securevol binary the plugins run
	image string // the busybox test image (scripts/test-image.sh)
	err   error  // why the suite could not be prepared, reported by each test
}

// env is set up by TestMain; tests get it through need(t).
var env suite

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	env.root = filepath.Dir(filepath.Dir(file))
	flag.Parse()
	// Only prepare when the tests will run: without an engine (or with
	// -short outside CI) each test skips, or fails under CI, through
	// testenv.RequireDocker.
	if (!testing.Short() || testenv.InCI()) && exec.Command("docker", "info").Run() == nil {
		env.err = prepare(&env)
	}
	return m.Run()
}

// prepare builds the binary and the test image.
func prepare(s *suite) error {
	// The same static build as `make build`: the managed plugin's rootfs is
	// FROM scratch. Always rebuilt (go build is incremental), so the tests
	// never run a stale binary.
	s.bin = filepath.Join(s.root, "bin", "securevol")
	build := exec.Command("go", "build", "-trimpath", "-o", s.bin, "./cmd/plugin")
	build.Dir = s.root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/plugin: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(s.root, "scripts", "test-image.sh")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/test-image.sh: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		return fmt.Errorf("scripts/test-image.sh printed no tag")
	}
	s.image = lines[len(lines)-1]
	return nil
}

// need skips or fails t if the engine is missing (testenv), and fails it if
// the suite could not be prepared.
func need(t testing.TB) *suite {
	t.Helper()
	testenv.RequireDocker(t)
	if env.err != nil {
		t.Fatal(env.err)
	}
	if env.bin == "" {
		t.Fatal("the suite was not prepared (docker info failed in TestMain but passes now?)")
	}
	return &env
}
