// Package storage keeps a host's disks: the images volumes are cloned
// from, and the volumes and snapshots themselves, as files on the host or
// in a shared pool that every host reaches.
//
// Driver is what a pool offers whatever it is: Local (files made by the
// functions below), RBD (a Ceph pool, driven with the rbd program and
// opened by QEMU through librbd) and NFS (qcow2 files on a share that QEMU
// opens with its own NFS client). Each says how QEMU attaches a volume
// (Attachment) and whether a VM on it can run on any host (Shared).
//
// ImageCache fetches each image once per host, checks its SHA-256 before
// anything uses it, and keeps it under its checksum so that images with the
// same bytes share one file; a copy is handed out only to a source that
// gave it on this host, so a checksum alone never opens another tenant's
// image. What the cache may read is bounded too: file:// images only
// under the directories it is told to allow, and downloads (through
// NewFetchClient) never to the machine itself or link-local addresses,
// checked on every connection after DNS and redirects. Volumes are qcow2 (thin clones of a cached
// image when made from one) or raw files made, grown and copied by
// qemu-img, which the design allows to be run as a program: its image
// formats are not worth reimplementing.
//
// Every function here can be called again after it failed or succeeded: a
// file appears under its final name only once it is complete, so the agent
// can reconcile by calling them on every pass.
//
// Formats are never guessed from a volume's bytes when it can be avoided. A
// guest writes what it likes to a raw disk, including a qcow2 header whose
// backing file names a file on the host; qemu-img, asked to guess, would
// then read that host file into a snapshot the tenant can boot. So each
// volume records its format on the file (the extended attribute
// user.hearth.format) and later operations pass it to qemu-img with -f.
// Only images, whose format is what their bytes say, and files made by
// something else are probed; and a backing image that itself names a
// backing or data file is refused.
package storage
