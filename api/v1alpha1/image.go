package v1alpha1

import "fmt"

// Image is a disk image volumes are cloned from: a cloud image, an
// installer ISO. An Image with no tenant is shared and every tenant may use
// it; a tenant's own images are private to it. Agents fetch an image into
// their host's cache the first time a volume there needs it, check its
// checksum, and report progress in status.hosts.
type Image = Resource[ImageSpec, ImageStatus]

type ImageSpec struct {
	// Description is free text for people.
	Description string      `json:"description,omitempty"`
	Source      ImageSource `json:"source"`
	// Format is qcow2, raw or iso (default qcow2).
	Format string `json:"format,omitempty"`
	// Architecture the image runs on (default x86_64).
	Architecture string `json:"architecture,omitempty"`
	// OSType is linux, windows or other (default linux); it chooses guest
	// settings such as the clock (Windows keeps local time).
	OSType string `json:"osType,omitempty"`
}

// ImageSource says where an image's bytes come from: a URL, or an upload
// through the API (`hearth image upload`). Exactly one is set.
type ImageSource struct {
	// URL is where hosts fetch the image from: http(s), or, for a shared
	// image (no tenant), file:// under a directory the agents allow
	// (`hearth agent --allow-file-dir`).
	URL string `json:"url,omitempty"`
	// Checksum ("sha256:…") is verified after download or upload. Without
	// it Hearth records the checksum of what it got in status.
	Checksum string `json:"checksum,omitempty"`
	// Upload says the bytes come through the API (`hearth image upload
	// NAME FILE`) rather than from a URL.
	Upload bool `json:"upload,omitempty"`
}

type ImageStatus struct {
	CommonStatus `json:",inline"`
	// Size is the image file's size; VirtualSize the size of the disk it
	// holds (the least a volume cloned from it can be).
	Size        Bytes `json:"size,omitempty"`
	VirtualSize Bytes `json:"virtualSize,omitempty"`
	// Checksum of the image's bytes ("sha256:…").
	Checksum string `json:"checksum,omitempty"`
	// Hosts are the hosts that have the image, or are fetching it.
	Hosts []ImageHostStatus `json:"hosts,omitempty"`
}

// ImageHostStatus is one host's copy of an image.
type ImageHostStatus struct {
	Host string `json:"host"`
	// Phase is Downloading, Ready or Failed.
	Phase string `json:"phase"`
	// Progress is how much of the image is there, in percent.
	Progress int    `json:"progress,omitempty"`
	Message  string `json:"message,omitempty"`
}

// Image phases (status.phase and status.hosts[].phase).
const (
	// ImagePending: waiting for an upload, or for a host to need it.
	ImagePending     = "Pending"
	ImageDownloading = "Downloading"
	ImageReady       = "Ready"
	ImageFailed      = "Failed"
)

// Image formats.
const (
	FormatQCOW2 = "qcow2"
	FormatRaw   = "raw"
	FormatISO   = "iso"
)

// OS types.
const (
	OSLinux   = "linux"
	OSWindows = "windows"
	OSOther   = "other"
)

func (s *ImageSpec) Default() {
	if s.Format == "" {
		s.Format = FormatQCOW2
	}
	if s.Architecture == "" {
		s.Architecture = ArchX86_64
	}
	s.Architecture = NormalizeArch(s.Architecture)
	if s.OSType == "" {
		s.OSType = OSLinux
	}
}

func (s *ImageSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	sp := path + ".source"
	switch {
	case s.Source.URL != "" && s.Source.Upload:
		es.Add(sp+".upload", "cannot be set with url: an image is downloaded or uploaded, not both")
	case s.Source.URL == "" && !s.Source.Upload:
		es.Add(sp+".url", "is required (or set upload: true and upload the image with `hearth image upload`)")
	case s.Source.URL != "":
		es = append(es, ValidateArtifactURL(sp+".url", s.Source.URL)...)
	}
	if s.Source.Checksum != "" {
		es = append(es, ValidateChecksum(sp+".checksum", s.Source.Checksum)...)
	}
	es = append(es, ValidateOneOf(path+".format", s.Format, FormatQCOW2, FormatRaw, FormatISO)...)
	es = append(es, ValidateArch(path+".architecture", s.Architecture)...)
	es = append(es, ValidateOneOf(path+".osType", s.OSType, OSLinux, OSWindows, OSOther)...)
	return es
}

// ValidateUpdate keeps an image's content fixed: volumes are thin clones
// of it, so new bytes under the same name would corrupt them. Publish a new
// image instead.
func (s *ImageSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*ImageSpec)
	var es FieldErrors
	if s.Source != o.Source {
		es.Add(path+".source", "cannot change: volumes are clones of the image; create a new image")
	}
	if s.Format != o.Format {
		es.Add(path+".format", "cannot change (was %q)", o.Format)
	}
	return es
}

// summary is the image's state in a few words for tables: the phase,
// else what the hosts say, with the slowest download under way
// ("Downloading 45%", "Ready (downloading 45%)").
func (s *ImageStatus) summary() string {
	slowest, failed := -1, false
	for _, h := range s.Hosts {
		switch h.Phase {
		case ImageReady:
			if s.Phase == "" {
				return ImageReady
			}
		case ImageDownloading:
			if slowest < 0 || h.Progress < slowest {
				slowest = h.Progress
			}
		case ImageFailed:
			failed = true
		}
	}
	switch {
	case slowest >= 0 && s.Phase == ImageReady:
		return fmt.Sprintf("%s (downloading %d%%)", ImageReady, slowest)
	case slowest >= 0:
		return fmt.Sprintf("%s %d%%", ImageDownloading, slowest)
	case s.Phase != "":
		return s.Phase
	case failed:
		return ImageFailed
	}
	return ImagePending
}

func init() {
	register[ImageSpec, ImageStatus](KindInfo{
		Kind: "Image", Plural: "images", ShortNames: []string{"image", "img"}, Scope: TenantOptional, SharedReadable: true,
		Description: "A disk image that volumes are cloned from, shared by all tenants or private to one.",
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return o.(*Image).Status.summary() }},
			{Name: "FORMAT", Get: func(o Object) string { return o.(*Image).Spec.Format }},
			{Name: "ARCH", Get: func(o Object) string { return o.(*Image).Spec.Architecture }},
			// Sizes of files are rounded for people (200Mi, not 205120Ki).
			{Name: "SIZE", Get: func(o Object) string {
				if s := o.(*Image).Status.Size; s != 0 {
					return s.Human()
				}
				return ""
			}},
			{Name: "VIRTUAL SIZE", Wide: true, Get: func(o Object) string {
				if s := o.(*Image).Status.VirtualSize; s != 0 {
					return s.Human()
				}
				return ""
			}},
			{Name: "HOSTS", Wide: true, Get: func(o Object) string {
				n := 0
				for _, h := range o.(*Image).Status.Hosts {
					if h.Phase == ImageReady {
						n++
					}
				}
				return fmt.Sprint(n)
			}},
			{Name: "SOURCE", Wide: true, Get: func(o Object) string {
				s := o.(*Image).Spec.Source
				if s.Upload {
					return "upload"
				}
				return s.URL
			}},
		},
	})
}
