package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults of the cluster settings.
const (
	DefaultLeaseTTL  = 15 * time.Second
	DefaultMountWait = 30 * time.Second
	// MinLeaseTTL is the shortest lease TTL: etcd's own floor, and the
	// fence needs room for a few keep-alives in each TTL.
	MinLeaseTTL = 2 * time.Second
)

// prefix is where the records and claims live in etcd.
const prefix = "/securevol/"

// dialTimeout bounds connecting to etcd; opTimeout one request.
const (
	dialTimeout = 5 * time.Second
	opTimeout   = 10 * time.Second
)

// Config is how a node joins the cluster.
type Config struct {
	// Endpoints are etcd's client URLs, e.g. https://10.0.0.1:2379.
	Endpoints []string
	// CACert verifies etcd's certificate; Cert and Key are this node's
	// client certificate (both or neither). All are PEM files.
	CACert, Cert, Key string
	// User and PasswordFile log in to etcd (both or neither); the file
	// holds the password on its first line.
	User, PasswordFile string
	// NodeName names this node in the claims; unique per node. A node
	// that starts under a name revokes the lease that name held before.
	NodeName string
	// LeaseTTL is how long a node that stops answering keeps its claims;
	// 0 is DefaultLeaseTTL.
	LeaseTTL time.Duration
	// MountWait is how long a mount waits for another node's claim; 0 is
	// DefaultMountWait.
	MountWait time.Duration
	// Log receives the node's log; nil discards it.
	Log *logrus.Entry
}

// withDefaults fills in what c leaves open and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.MountWait == 0 {
		c.MountWait = DefaultMountWait
	}
	if c.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.Log = logrus.NewEntry(l)
	}
	return c, c.check()
}

// check says what makes c unusable.
func (c Config) check() error {
	switch {
	case len(c.Endpoints) == 0:
		return fmt.Errorf("%w: no etcd endpoint", ErrConfig)
	case c.NodeName == "" || strings.ContainsAny(c.NodeName, "/\x00") || len(c.NodeName) > 253:
		return fmt.Errorf("%w: node name %q: must be 1 to 253 characters without '/'", ErrConfig, c.NodeName)
	case c.LeaseTTL < MinLeaseTTL || c.LeaseTTL%time.Second != 0:
		return fmt.Errorf("%w: lease TTL %v: must be whole seconds, at least %v", ErrConfig, c.LeaseTTL, MinLeaseTTL)
	case c.MountWait < 0:
		return fmt.Errorf("%w: mount wait %v is negative", ErrConfig, c.MountWait)
	case (c.Cert == "") != (c.Key == ""):
		return fmt.Errorf("%w: a client certificate needs both its certificate and its key file", ErrConfig)
	case c.PasswordFile != "" && c.User == "":
		return fmt.Errorf("%w: an etcd password file without an etcd user", ErrConfig)
	case c.User != "" && c.PasswordFile == "":
		return fmt.Errorf("%w: etcd user %s without a password file", ErrConfig, c.User)
	}
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: etcd endpoint %q: want http://host:port or https://host:port", ErrConfig, e)
		}
	}
	return nil
}

// clientConfig is the etcd client's configuration: TLS from the files,
// the password read from its file (never from argv or the environment).
func (c Config) clientConfig() (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: dialTimeout,
		Username:    c.User,
		Logger:      zap.NewNop(),
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return cc, fmt.Errorf("%w: etcd password file: %w", ErrConfig, err)
		}
		cc.Password, _, _ = strings.Cut(string(b), "\n")
		if cc.Password == "" {
			return cc, fmt.Errorf("%w: etcd password file %s is empty", ErrConfig, c.PasswordFile)
		}
	}
	tlsc, err := c.tls()
	if err != nil {
		return cc, err
	}
	cc.TLS = tlsc
	return cc, nil
}

// tls is the TLS configuration from the certificate files; nil if none
// is set and no endpoint is https.
func (c Config) tls() (*tls.Config, error) {
	https := false
	for _, e := range c.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if c.CACert == "" && c.Cert == "" && !https {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd CA certificate: %w", ErrConfig, err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd CA certificate %s holds no PEM certificate", ErrConfig, c.CACert)
		}
	}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd client certificate: %w", ErrConfig, err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}
