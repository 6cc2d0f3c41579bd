################################################################################
#
# hakeys-boot
#
################################################################################

# Files of this tree only, nothing to download: the unit that unlocks the
# data partition early in boot, the unit that ends the boot phase for
# certain before containers start, and the scripts they run.
HAKEYS_BOOT_LICENSE = Apache-2.0

define HAKEYS_BOOT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-unlock-data \
		$(TARGET_DIR)/usr/libexec/hakeys-unlock-data
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-boot-done \
		$(TARGET_DIR)/usr/libexec/hakeys-boot-done
endef

define HAKEYS_BOOT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-unlock-data.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-unlock-data.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-boot-done.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-boot-done.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/50-hakeys-boot.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/50-hakeys-boot.preset
endef

$(eval $(generic-package))
