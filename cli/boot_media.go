package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"hearth.dev/hearth/boot/media"
)

// newBootMediaCmd is `hearth boot media`: boot media for machines whose NIC
// cannot network-boot by itself.
func newBootMediaCmd(g *globals) *cobra.Command {
	var o media.Options
	var out string
	cmd := &cobra.Command{
		Use:   "media --boot-url URL -o FILE",
		Short: "Write a bootable ISO or USB image that starts the network boot and chainloads this boot service",
		Long: `Write boot media for machines whose network card cannot PXE-boot: the
image starts iPXE, which gets an address by DHCP and chainloads the boot
service's script for the machine (found by its MAC), so the machine goes on
as if it had network-booted. --usb makes an image that also boots when
written to a USB stick (dd if=FILE of=/dev/sdX).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := media.Write(cmd.Context(), out, o); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s: boots iPXE and chainloads %s/boot.ipxe\n", out, o.BootURL)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.BootURL, "boot-url", "", "the boot service's HTTP base, e.g. http://192.0.2.2:8080")
	cmd.Flags().StringVarP(&out, "output", "o", "hearth-boot.iso", "file to write")
	cmd.Flags().BoolVar(&o.USB, "usb", false, "make it bootable from a USB stick too (isohybrid)")
	cmd.MarkFlagRequired("boot-url")
	return cmd
}
