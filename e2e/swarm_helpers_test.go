package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
)

// The test swarm (scripts/swarm.sh): two engines on this machine, each in
// network, mount and UTS namespaces of its own, on a bridge with etcd.
// Node 1 is the manager, node 2 a worker: a swarm of one manager needs that
// manager alive to reschedule anything, so the node the tests crash is
// always node 2.
const (
	// swarmPlugin is the plugin's name on the nodes' engines: they are the
	// tests' own, so it is the name users give it.
	swarmPlugin = "securevol"
	// swarmEtcd is the etcd scripts/swarm.sh runs on the bridge.
	swarmEtcd = "http://10.77.0.1:2379"
	// swarmTTL is the nodes' lease TTL: short, so that takeovers are quick.
	swarmTTL = 5 * time.Second
	// swarmMountWait is how long a Mount waits for another node's lease:
	// longer than a task's stop (drain) and than swarmTTL (a crashed
	// holder), short enough that a refused Mount does not stall the test.
	swarmMountWait = 12 * time.Second
)

// swarmCluster is the running test swarm.
type swarmCluster struct {
	root   string // the repository (scripts/swarm.sh)
	dir    string // SWARM_DIR: the engines' data and logs, etcd's data
	shared string // the `shared` mount source of both plugins
	keys   string // the `keys` mount source of both plugins: one master key
	image  string // the busybox test image, loaded into both engines
	rootfs string // the plugin's config.json + rootfs, for docker plugin create (in dir)
	nodes  []*swarmNode
}

// swarmNode is one engine of the swarm.
type swarmNode struct {
	n        int
	hostname string // svnodeN: the swarm node's name, and its netns
	name     string // nodeN: the plugin's SECUREVOL_NODE_NAME
	host     string // docker -H
	state    string // the plugin's node-local state mount source
	log      string // dockerd's log: the plugin's output lands there too
	pluginID string
}

// requireSwarm skips t (fails it under CI) if a tool the swarm needs is
// missing.
func requireSwarm(t *testing.T) *suite {
	t.Helper()
	s := need(t)
	for tool, pkg := range map[string]string{
		"ip": "iproute2", "unshare": "util-linux", "etcd": "etcd-server",
		"iptables": "iptables", "curl": "curl", "dockerd": "docker.io",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, fmt.Sprintf("the swarm test needs %s (Debian package %s)", tool, pkg))
		}
	}
	return s
}

// startSwarm brings up the network, etcd and both engines (scripts/swarm.sh
// up, which first clears what a crashed run left), forms the swarm, and
// loads the test image and the plugin built from this tree into both
// engines. Everything is torn down when t ends, failed or not.
func startSwarm(t *testing.T) *swarmCluster {
	s := requireSwarm(t)
	c := &swarmCluster{root: s.root, dir: "/var/tmp/securevol-swarm", image: s.image}
	c.shared, c.keys = filepath.Join(c.dir, "shared"), filepath.Join(c.dir, "keys")
	for n := 1; n <= 2; n++ {
		c.nodes = append(c.nodes, &swarmNode{
			n:        n,
			hostname: fmt.Sprintf("svnode%d", n),
			name:     fmt.Sprintf("node%d", n),
			host:     "unix://" + filepath.Join(c.dir, fmt.Sprintf("node%d", n), "docker.sock"),
			state:    filepath.Join(c.dir, fmt.Sprintf("node%d", n), "state"),
			log:      filepath.Join(c.dir, fmt.Sprintf("node%d", n), "dockerd.log"),
		})
	}
	begin := time.Now()
	step := func(what string) { t.Logf("swarm start-up %5.1fs: %s", time.Since(begin).Seconds(), what) }
	t.Cleanup(func() { c.stop(t) })
	c.script(t, "up")
	step("network, etcd and two engines up")

	c.loadImage(t)
	step("test image loaded")
	// Before the swarm: a node describes its plugins to the manager when it
	// joins, and then only every 20 s, and the scheduler places a task
	// only on a node known to have its volume driver.
	c.installPlugins(t)
	step("plugin installed and enabled on both nodes")
	c.formSwarm(t)
	step("swarm formed")
	return c
}

func (c *swarmCluster) script(t testing.TB, args ...string) {
	t.Helper()
	if _, err := command([]string{"SWARM_DIR=" + c.dir}, "", filepath.Join(c.root, "scripts", "swarm.sh"), args...); err != nil {
		t.Fatal(err)
	}
}

// stop dumps the logs if t failed, then tears everything down.
func (c *swarmCluster) stop(t *testing.T) {
	if t.Failed() {
		for _, n := range c.nodes {
			b, _ := os.ReadFile(n.log)
			t.Logf("%s dockerd log (last 60 lines):\n%s", n.hostname, tail(string(b), 60))
		}
		b, _ := os.ReadFile(filepath.Join(c.dir, "etcd", "etcd.log"))
		t.Logf("etcd log (last 20 lines):\n%s", tail(string(b), 20))
	}
	if _, err := command([]string{"SWARM_DIR=" + c.dir}, "", filepath.Join(c.root, "scripts", "swarm.sh"), "down"); err != nil {
		t.Errorf("tear down the swarm: %v", err)
	}
}

// formSwarm: node 1 initialises the swarm, node 2 joins as a worker. A
// heartbeat of 1 s lets the manager see a dead node within seconds.
func (c *swarmCluster) formSwarm(t *testing.T) {
	n1, n2 := c.nodes[0], c.nodes[1]
	n1.docker(t, "swarm", "init", "--advertise-addr", "10.77.0.11", "--dispatcher-heartbeat", "1s")
	token := n1.docker(t, "swarm", "join-token", "-q", "worker")
	n2.docker(t, "swarm", "join", "--advertise-addr", "10.77.0.12", "--token", token, "10.77.0.11:2377")
	for _, n := range c.nodes {
		c.waitNode(t, n, "ready", 30*time.Second)
		c.waitDescribed(t, n)
	}
}

// waitDescribed waits until the manager knows n has the plugin.
func (c *swarmCluster) waitDescribed(t testing.TB, n *swarmNode) {
	t.Helper()
	eventually(t, 30*time.Second, n.hostname+" to report the plugin to the manager", func() error {
		out, err := c.nodes[0].dockerTry("node", "inspect", "-f", `{{range .Description.Engine.Plugins}}{{.Type}}={{.Name}} {{end}}`, n.hostname)
		if err != nil {
			return err
		}
		if !slices.Contains(strings.Fields(out), "Volume="+swarmPlugin+":latest") {
			return fmt.Errorf("plugins %s", out)
		}
		return nil
	})
}

// loadImage moves the test image from the host's engine to both nodes.
func (c *swarmCluster) loadImage(t *testing.T) {
	for _, n := range c.nodes {
		sh := fmt.Sprintf("docker save %s | docker -H %s load", c.image, n.host)
		if out, err := command(nil, "", "sh", "-c", sh); err != nil {
			t.Fatalf("%s: %v %s", sh, err, out)
		}
	}
}

// installPlugins builds the plugin's rootfs once (on the host's engine),
// makes the master key once (so the nodes do not race to generate two),
// and creates, configures and enables the plugin on both nodes.
func (c *swarmCluster) installPlugins(t *testing.T) {
	s := need(t)
	// In SWARM_DIR, so that scripts/swarm.sh down removes it even after a
	// killed run.
	c.rootfs = filepath.Join(c.dir, "plugin")
	script(t, []string{"BIN=" + s.bin}, "plugin.sh", "rootfs", c.rootfs)
	if err := os.MkdirAll(c.keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := command(nil, "", s.bin, "key", "generate", filepath.Join(c.keys, "master.key")); err != nil {
		t.Fatalf("securevol key generate: %v %s", err, out)
	}
	for _, n := range c.nodes {
		n.pluginID = c.createPlugin(t, n, swarmPlugin, n.state,
			"shared.source="+c.shared,
			"SECUREVOL_ETCD_ENDPOINTS="+swarmEtcd,
			"SECUREVOL_NODE_NAME="+n.name,
			"SECUREVOL_LEASE_TTL="+swarmTTL.String(),
			"SECUREVOL_MOUNT_WAIT="+swarmMountWait.String())
	}
}

// createPlugin creates plugin name on n from the rootfs with its state in
// state, the shared key folder and settings, enables it, and returns its
// ID.
func (c *swarmCluster) createPlugin(t testing.TB, n *swarmNode, name, state string, settings ...string) string {
	t.Helper()
	return c.createPluginFrom(t, n, c.rootfs, name, state, settings...)
}

// createPluginFrom is createPlugin from another rootfs folder.
func (c *swarmCluster) createPluginFrom(t testing.TB, n *swarmNode, rootfs, name, state string, settings ...string) string {
	t.Helper()
	for _, kv := range append(settings, "state.source="+state) {
		// The engine does not create a mount's source.
		if k, src, _ := strings.Cut(kv, "="); strings.HasSuffix(k, ".source") {
			if err := os.MkdirAll(src, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	n.docker(t, "plugin", "create", name, rootfs)
	n.docker(t, append([]string{"plugin", "set", name,
		"state.source=" + state, "keys.source=" + c.keys, "SECUREVOL_LOG_LEVEL=debug"}, settings...)...)
	n.docker(t, "plugin", "enable", name)
	return n.docker(t, "plugin", "inspect", "-f", "{{.ID}}", name)
}

// docker runs the docker CLI against node n and fails t if it fails.
func (n *swarmNode) docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.dockerTry(args...)
	if err != nil {
		t.Fatalf("%s: %v", n.hostname, err)
	}
	return out
}

func (n *swarmNode) dockerTry(args ...string) (string, error) {
	return dockerTry(append([]string{"-H", n.host}, args...)...)
}

// pluginPid is the pid of n's plugin process (0 if none runs).
func (n *swarmNode) pluginPid() int {
	return (&plugin{id: n.pluginID}).managedPid()
}

// pluginClient calls plugin id of n on its socket, as the engine does; the
// host reaches the socket because the node's /run/docker is /run/svsN on
// the host (scripts/swarm.sh).
func (n *swarmNode) pluginClient(id string) *http.Client {
	return testenv.UnixClient(filepath.Join(fmt.Sprintf("/run/svs%d", n.n), "plugins", id, "securevol.sock"), time.Minute)
}

// logSince returns n's dockerd log from byte offset mark on.
func (n *swarmNode) logSince(mark int) string {
	b, _ := os.ReadFile(n.log)
	if mark > len(b) {
		return string(b)
	}
	return string(b[mark:])
}

func (n *swarmNode) logMark() int {
	fi, err := os.Stat(n.log)
	if err != nil {
		return 0
	}
	return int(fi.Size())
}

// waitNode waits until the manager reports node n in state (ready, down).
func (c *swarmCluster) waitNode(t testing.TB, n *swarmNode, state string, d time.Duration) {
	t.Helper()
	eventually(t, d, n.hostname+" to be "+state, func() error {
		got, err := c.nodes[0].dockerTry("node", "inspect", "-f", "{{.Status.State}}", n.hostname)
		if err != nil {
			return err
		}
		if got != state {
			return fmt.Errorf("state %s", got)
		}
		return nil
	})
}

// availability sets a node's availability (active, pause, drain).
func (c *swarmCluster) availability(t testing.TB, n *swarmNode, a string) {
	t.Helper()
	c.nodes[0].docker(t, "node", "update", "--availability", a, n.hostname)
}

// task is one line of docker service ps.
type task struct {
	node, desired, current, err string
}

func (c *swarmCluster) tasks(t testing.TB, service string) []task {
	t.Helper()
	out := c.nodes[0].docker(t, "service", "ps", "--no-trunc", "--format", "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}", service)
	var ts []task
	for _, l := range strings.Split(out, "\n") {
		// The output is trimmed: a last task with no error has 3 fields.
		f := append(strings.SplitN(l, "\t", 4), "")
		if len(f) >= 4 {
			ts = append(ts, task{f[0], f[1], f[2], f[3]})
		}
	}
	return ts
}

// waitRunning waits until service's task runs on node n (on any node if n
// is nil) and returns that node.
func (c *swarmCluster) waitRunning(t testing.TB, service string, n *swarmNode, d time.Duration) *swarmNode {
	t.Helper()
	var on *swarmNode
	eventually(t, d, "a task of "+service+" to run", func() error {
		ts := c.tasks(t, service)
		for _, tk := range ts {
			if tk.desired == "Running" && strings.HasPrefix(tk.current, "Running") && (n == nil || tk.node == n.hostname) {
				on = c.node(tk.node)
				return nil
			}
		}
		return fmt.Errorf("tasks %v", ts)
	})
	return on
}

func (c *swarmCluster) node(hostname string) *swarmNode {
	for _, n := range c.nodes {
		if n.hostname == hostname {
			return n
		}
	}
	return nil
}

// container is the ID of service's running container on n.
func (n *swarmNode) container(t testing.TB, service string) string {
	t.Helper()
	var id string
	eventually(t, 20*time.Second, "the container of "+service+" on "+n.hostname, func() error {
		out, err := n.dockerTry("ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
		if err != nil {
			return err
		}
		if f := strings.Fields(out); len(f) == 1 {
			id = f[0]
			return nil
		}
		return fmt.Errorf("containers %q", out)
	})
	return id
}

// createService starts a service of one replica whose task runs script
// in the test image with the securevol volume vol at /data, and removes it
// when t ends. NODE in the task's environment is the swarm node it runs on.
// The script should end in `keep`, which waits for the stop signal.
func (c *swarmCluster) createService(t testing.TB, name, vol, script string, opts ...string) {
	t.Helper()
	args := []string{"service", "create", "-d", "--no-resolve-image", "--name", name, "--replicas", "1",
		"--mount", "type=volume,source=" + vol + ",target=/data,volume-driver=" + swarmPlugin,
		"--env", "NODE={{.Node.Hostname}}", "--stop-grace-period", "5s"}
	args = append(append(args, opts...), c.image, "sh", "-euc", "keep() { trap 'exit 0' TERM; while :; do sleep 0.2; done; }; "+script)
	c.nodes[0].docker(t, args...)
	t.Cleanup(func() { c.nodes[0].dockerTry("service", "rm", name) })
}

// removeService removes a service and waits until its containers are gone
// from every live node (so its volume is unmounted).
func (c *swarmCluster) removeService(t testing.TB, name string) {
	t.Helper()
	c.nodes[0].docker(t, "service", "rm", name)
	for _, n := range c.nodes {
		eventually(t, 30*time.Second, "the containers of "+name+" to go on "+n.hostname, func() error {
			out, err := n.dockerTry("ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+name)
			if err != nil || out != "" {
				return fmt.Errorf("containers %q (%v)", out, err)
			}
			return nil
		})
	}
}
