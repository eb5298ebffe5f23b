package driver

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/store"
)

// quarantine moves the database records that cannot be read aside before
// anything lists them, so one damaged record stops neither start-up nor
// List. Each is logged and reported. Its backing folder is left alone:
// reconcile then finds a folder without record and recovers the volume
// from its header (without its mount references) when the header
// authenticates its name.
func (d *Driver) quarantine(rep *StartReport) error {
	moved, err := d.cfg.Store.Quarantine(time.Now())
	if err != nil {
		return fmt.Errorf("moving damaged records aside: %w", err)
	}
	for _, q := range moved {
		rep.Quarantined = append(rep.Quarantined, q.Key)
		d.log.WithFields(logrus.Fields{"volume": q.Key, "bytes": len(q.Raw), "reason": q.Reason}).Warn("moved a damaged database record aside (quarantine); the volume is recovered from its folder if the folder's header names it")
	}
	return nil
}

// Quarantined lists the damaged records moved aside at start-ups, with
// the bytes they held.
func (d *Driver) Quarantined() ([]store.Quarantined, error) {
	return d.cfg.Store.Quarantined()
}
