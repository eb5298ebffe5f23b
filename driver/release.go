package driver

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/store"
)

// Release drops stale mount references of the volume name: those of
// mountID, or every one when mountID is "", and answers how many it
// dropped. A Mount whose answer the engine lost leaves a reference no
// Unmount will ever drop, and a referenced volume cannot be removed.
//
// When no reference remains the volume is unmounted, as at the last
// Unmount (lazily if something still holds it, and bounded). A container
// still running with the volume keeps the files it holds open but loses
// the mount's later use, so release only references whose containers are
// gone.
func (d *Driver) Release(name, mountID string) (released int, err error) {
	v, unlock, err := d.lockVolume(name)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if mountID != "" {
		if released = v.rec.Mounts[mountID]; released == 0 {
			return 0, classed(ErrNotFound, "volume %s: mount ID %s holds no reference (%s)", name, mountID, holders(v.rec))
		}
		delete(v.rec.Mounts, mountID)
	} else {
		released = references(v.rec)
		v.rec.Mounts = nil
	}
	log := d.log.WithFields(logrus.Fields{"volume": name, "mount_id": mountID, "released": released})
	if released > 0 {
		if err := v.saveRefs(); err != nil {
			return 0, fmt.Errorf("release %s: %w", name, err)
		}
		log.Warn("released stale mount references")
	}
	if len(v.rec.Mounts) == 0 && d.live(name) != nil {
		if err := v.detach(); err != nil {
			return released, fmt.Errorf("release %s: the references are dropped, but: %w", name, err)
		}
		log.Info("unmounted volume: no reference remains")
	}
	return released, nil
}

// holders says which mount IDs hold references to v.
func holders(v *store.Volume) string {
	if len(v.Mounts) == 0 {
		return "no mount ID holds one"
	}
	return "mount IDs holding references: " + strings.Join(slices.Sorted(maps.Keys(v.Mounts)), ", ")
}

// References are the volume name's mount references by mount ID: what
// Release takes.
func (d *Driver) References(name string) (map[string]int, error) {
	v, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	return maps.Clone(v.Mounts), nil
}
