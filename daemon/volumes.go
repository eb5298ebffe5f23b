package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/go-plugins-helpers/volume"
)

// volumes is the admin call Volumes: every volume with its Status.
func (s *service) volumes(_ context.Context, _ *VolumesRequest) (*VolumesResult, error) {
	list, err := s.drv.List()
	if err != nil {
		return nil, err
	}
	res := &VolumesResult{Volumes: make([]VolumeInfo, 0, len(list.Volumes))}
	for _, v := range list.Volumes {
		info, err := s.describe(v.Name)
		if err != nil {
			// Removed meanwhile, or unreadable: still listed, as List has it.
			info = &VolumeInfo{Name: v.Name, CreatedAt: v.CreatedAt, Mountpoint: v.Mountpoint,
				Status: map[string]any{"state": "error: " + err.Error()}}
		}
		res.Volumes = append(res.Volumes, *info)
	}
	slices.SortFunc(res.Volumes, func(a, b VolumeInfo) int { return strings.Compare(a.Name, b.Name) })
	return res, nil
}

// volume is the admin call Volume: one volume with its Status.
func (s *service) volume(_ context.Context, req *VolumeRequest) (*VolumeInfo, error) {
	list, err := s.drv.List()
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(list.Volumes, func(v *volume.Volume) bool { return v.Name == req.Name }) {
		return nil, fmt.Errorf("volume %q: %w", req.Name, ErrNoSuchVolume)
	}
	return s.describe(req.Name)
}

// describe is what the engine's Get answers about name.
func (s *service) describe(name string) (*VolumeInfo, error) {
	res, err := s.drv.Get(&volume.GetRequest{Name: name})
	if err != nil {
		return nil, err
	}
	v := res.Volume
	refs, err := s.drv.References(name)
	if err != nil {
		return nil, err
	}
	return &VolumeInfo{Name: v.Name, CreatedAt: v.CreatedAt, Mountpoint: v.Mountpoint, Status: v.Status, References: refs}, nil
}

// release is the admin call Release: a volume's stale mount references go.
func (s *service) release(_ context.Context, req *ReleaseRequest) (*ReleaseResult, error) {
	n, err := s.drv.Release(req.Name, req.MountID)
	if err != nil {
		return nil, err
	}
	return &ReleaseResult{Released: n}, nil
}

// removed is the admin call Removed: the volumes within their grace period.
func (s *service) removed(_ context.Context, _ *RemovedRequest) (*RemovedResult, error) {
	vols, err := s.drv.Removed()
	if err != nil {
		return nil, err
	}
	return &RemovedResult{Volumes: vols}, nil
}

// undelete is the admin call Undelete: a removed volume comes back.
func (s *service) undelete(_ context.Context, req *UndeleteRequest) (*UndeleteResult, error) {
	if err := s.drv.Undelete(req.Name, req.ID); err != nil {
		return nil, err
	}
	return &UndeleteResult{}, nil
}
