################################################################################
#
# hakeys-boot
#
################################################################################

# Files of this tree only, nothing to download: the units that encrypt the
# data partition in place (when asked for) and grow it on LUKS2, the unit
# that unlocks the data partition early in boot, the unit that ends the boot phase for
# certain before containers start, the units that render Home Assistant's
# sealed secrets to RAM (docs/home-assistant.md), and the scripts they run.
HAKEYS_BOOT_LICENSE = Apache-2.0

define HAKEYS_BOOT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-unlock-data \
		$(TARGET_DIR)/usr/libexec/hakeys-unlock-data
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-boot-done \
		$(TARGET_DIR)/usr/libexec/hakeys-boot-done
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-ha-secrets \
		$(TARGET_DIR)/usr/libexec/hakeys-ha-secrets
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-encrypt-data \
		$(TARGET_DIR)/usr/libexec/hakeys-encrypt-data
	$(INSTALL) -D -m 0755 $(HAKEYS_BOOT_PKGDIR)/hakeys-grow-data \
		$(TARGET_DIR)/usr/libexec/hakeys-grow-data
endef

define HAKEYS_BOOT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-unlock-data.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-unlock-data.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-boot-done.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-boot-done.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-ha-secrets.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-ha-secrets.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-ha-secrets.path \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-ha-secrets.path
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-encrypt-data.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-encrypt-data.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-grow-data-partition.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-grow-data-partition.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/hakeys-grow-data.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-grow-data.service
	$(INSTALL) -D -m 0644 $(HAKEYS_BOOT_PKGDIR)/50-hakeys-boot.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/50-hakeys-boot.preset
endef

$(eval $(generic-package))
