package mountinfo

import "testing"

func TestParse(t *testing.T) {
	data := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"43 22 0:39 / /var/tmp/b\\040x/mnt rw,nosuid - fuse.securevol /var/tmp/b\\040x/cipher rw,user_id=0\n"
	ms, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d entries, want 2", len(ms))
	}
	want := Mount{Mountpoint: "/var/tmp/b x/mnt", FSType: "fuse.securevol", Source: "/var/tmp/b x/cipher", Major: 0, Minor: 39}
	if ms[1] != want {
		t.Errorf("entry = %+v, want %+v", ms[1], want)
	}
	for _, bad := range []string{"garbage without separator\n", "1 2 - ext4 /dev/x\n", "1 2 0x27 / /m rw - ext4 /dev/x rw\n"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("malformed mountinfo %q accepted", bad)
		}
	}
}

func TestIsUnder(t *testing.T) {
	for _, tc := range []struct {
		path, dir string
		want      bool
	}{
		{"/a/b", "/a", true},
		{"/a", "/a", true},
		{"/ab", "/a", false},
		{"/x", "/", true},
	} {
		if got := IsUnder(tc.path, tc.dir); got != tc.want {
			t.Errorf("IsUnder(%q, %q) = %v", tc.path, tc.dir, got)
		}
	}
}

func TestReadSeesRoot(t *testing.T) {
	m, err := At("/")
	if err != nil || m == nil {
		t.Fatalf("At(/) = %v, %v: the root file system must be listed", m, err)
	}
}
