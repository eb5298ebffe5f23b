package driver

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	units "github.com/docker/go-units"

	"github.com/securevol/securevol/store"
)

// nameRE is Docker's rule for volume names (moby volume/local: validName).
// It admits no '/', and no name that is "." or ".." as a whole, so a name is
// always a single path component below the mount root.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// maxNameLen keeps <mount-root>/<name> within one path component (NAME_MAX).
const maxNameLen = 255

// checkName is ValidateName with its error classed ErrInvalid.
func checkName(name string) error {
	if err := ValidateName(name); err != nil {
		return classed(ErrInvalid, "%w", err)
	}
	return nil
}

// ValidateName checks a volume name against Docker's rule.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("volume name is empty")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("volume name is %d bytes long; at most %d are allowed", len(name), maxNameLen)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid volume name %q: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at least two characters, no slashes or spaces)", name)
	}
	return nil
}

// DefaultOptions are a new volume's root owner and mode when no option says
// otherwise: root, rwxr-xr-x (as Docker's local driver).
func DefaultOptions() store.Options { return store.Options{UID: 0, GID: 0, Mode: 0o755} }

// optionHelp describes each valid option; its keys are the valid names.
var optionHelp = map[string]string{
	"uid":  "owner of the volume's root directory (number)",
	"gid":  "group of the volume's root directory (number)",
	"mode": "permissions of the volume's root directory (octal, e.g. 0750)",
	"size": "most the volume may hold (e.g. 500M, 10G; binary units: 10G = 10 GiB)",
}

// validOptionNames lists every create option, readonly-of included (Create
// takes that one apart, before ParseOptions: see view.go).
func validOptionNames() string {
	return strings.Join(slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(optionHelp)), OptReadOnlyOf))), ", ")
}

// secretWords mark option names that look like they carry a secret. Docker
// shows every volume option in `docker volume inspect` and stores it in its
// own database, so a secret there is leaked; the master key comes from the
// daemon's --key-file, --passphrase-file or --key-command instead.
var secretWords = []string{"pass", "secret", "key", "token", "cred", "pwd", "pin", "auth", "cert"}

func looksSecret(opt string) bool {
	o := strings.ToLower(opt)
	for _, w := range secretWords {
		if strings.Contains(o, w) {
			return true
		}
	}
	return false
}

// maxID is the largest uid/gid a volume may use: 2^32-1 is (uid_t)-1,
// which chown reads as "leave unchanged".
const maxID = 1<<32 - 2

// ParseOptions validates the options of a Create request and returns them
// with defaults filled in. Error messages never repeat an option's value:
// a user who put a secret in the wrong place should not see it echoed into
// the engine's logs.
func ParseOptions(opts map[string]string) (store.Options, error) {
	o := DefaultOptions()
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := strings.TrimSpace(opts[k])
		if _, ok := optionHelp[k]; !ok {
			if looksSecret(k) {
				return o, fmt.Errorf("option %q looks like a secret: securevol takes no secrets as volume options, because docker volume inspect shows them; the master key comes from the daemon's key file, passphrase file or key command (valid options: %s)", k, validOptionNames())
			}
			return o, fmt.Errorf("unknown option %q (valid options: %s)", k, validOptionNames())
		}
		switch k {
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n > maxID {
				return o, fmt.Errorf("invalid %s: must be a decimal number from 0 to %d", k, uint64(maxID))
			}
			if k == "uid" {
				o.UID = uint32(n)
			} else {
				o.GID = uint32(n)
			}
		case "mode":
			n, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
			if err != nil || n > 0o7777 {
				return o, fmt.Errorf("invalid mode: must be octal permission bits from 0 to 7777, e.g. 0750")
			}
			o.Mode = uint32(n)
		case "size":
			n, err := parseSize(v)
			if err != nil {
				return o, err
			}
			o.Size = n
		}
	}
	return o, nil
}

// MinSize is the smallest size limit: the volume's own bookkeeping takes
// about 5 KiB, and a smaller limit is far more likely a missing unit
// ("size=10") than a wish.
const MinSize = 1 << 20

// parseSize reads a size limit in go-units' RAMInBytes syntax: a number
// with an optional k, m, g, t or p (optionally followed by b or ib, any
// case), all binary. Binary because that is what the size options users
// know mean: Docker's local driver and --storage-opt size parse them with
// RAMInBytes, and lvm (the lvm volume plugin) reads 10G as 10 GiB. The
// error does not repeat the value (see ParseOptions).
func parseSize(v string) (int64, error) {
	n, err := units.RAMInBytes(v)
	if err != nil {
		return 0, errors.New("invalid size: give a number of bytes with an optional unit k, m, g, t or p (binary: 10G = 10 GiB), e.g. 500M or 10G")
	}
	if n < MinSize {
		// Also a value too large for 64 bits, which go-units turns
		// negative.
		return 0, fmt.Errorf("invalid size: must be at least %s and below 8 EiB", humanBytes(MinSize))
	}
	return n, nil
}

// optionLabels renders options for the backing folder's header, from which
// a lost database is rebuilt. A size limit is a label like the others (the
// header's labels are a map: no format change); volumes without one keep
// the labels they always had.
func optionLabels(o store.Options) map[string]string {
	l := map[string]string{
		"uid":  strconv.FormatUint(uint64(o.UID), 10),
		"gid":  strconv.FormatUint(uint64(o.GID), 10),
		"mode": fmt.Sprintf("%04o", o.Mode),
	}
	if o.Size > 0 {
		l["size"] = strconv.FormatInt(o.Size, 10)
	}
	return l
}

// formatOptions is the human form used in messages.
func formatOptions(o store.Options) string {
	s := formatRoot(o)
	if o.Size > 0 {
		s += fmt.Sprintf(" size=%d (%s)", o.Size, humanBytes(o.Size))
	}
	return s
}

// formatRoot is the root directory's part of the options, for Status.
func formatRoot(o store.Options) string {
	return fmt.Sprintf("uid=%d gid=%d mode=%04o", o.UID, o.GID, o.Mode)
}
