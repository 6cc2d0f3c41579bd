################################################################################
#
# hakeys
#
################################################################################

# The workspace version (Cargo.toml); hakeys-ta builds from the same source.
HAKEYS_VERSION = 0.1.0
ifeq ($(BR2_PACKAGE_HAKEYS_SITE_LOCAL),y)
HAKEYS_SITE = $(BR2_EXTERNAL_HAKEYS_PATH)/..
HAKEYS_SITE_METHOD = local
HAKEYS_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /ta/target --exclude /.cache \
	--exclude /fuzz --exclude /buildroot
else
# The published file is hakeys-$(VERSION).tar.gz; Buildroot's cargo
# infrastructure names what it stores in DL_DIR (after vendoring the
# crates into it) hakeys-$(VERSION)-cargoN.tar.gz, N being its vendoring
# format. `?buildroot-path=filename` (as Buildroot's own cargo packages
# do) makes the download fetch exactly the URL given, whatever the stored
# name is; hakeys.hash names the stored file.
HAKEYS_SITE = $(call qstrip,$(BR2_PACKAGE_HAKEYS_RELEASE_SITE))/hakeys-$(HAKEYS_VERSION).tar.gz?buildroot-path=filename
endif
HAKEYS_LICENSE = Apache-2.0
HAKEYS_LICENSE_FILES = LICENSE
HAKEYS_DEPENDENCIES = optee-client

# teectl with the libteec backend, teed, and teed-docker-proxy (teed's one
# Docker API call). optee-teec-sys links -lteec from
# $(OPTEE_CLIENT_EXPORT)/usr/lib: optee-client's staging install.
HAKEYS_CARGO_ENV = OPTEE_CLIENT_EXPORT=$(STAGING_DIR)
HAKEYS_CARGO_BUILD_OPTS = \
	-p teectl -p teed --features teectl/tee,teed/tee --bin teectl --bin teed \
	--bin teed-docker-proxy
HAKEYS_BIN_DIR = \
	$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)

# Groups and users: teeclnt owns /dev/tee* (61-hakeys-tee.rules; the group
# teed.service names), teepriv owns /dev/teepriv* and the eMMC RPMB device,
# teesuppl runs optee-client's tee-supplicant@.service (Buildroot's
# optee-client creates none of them), and hakeys runs teed, as
# systemd/hakeys.sysusers.conf declares it.
define HAKEYS_USERS
	- -1 teeclnt -1 - - - - TEE clients
	- -1 teepriv -1 - - - - TEE supplicant devices
	teesuppl -1 teesuppl -1 * - - teepriv OP-TEE tee-supplicant
	hakeys -1 hakeys -1 * - /usr/sbin/nologin teeclnt hakeys decrypt daemon
endef

ifeq ($(BR2_PACKAGE_HAKEYS_SITE_LOCAL),y)
# A local source skips the download step, where Buildroot vendors the
# crates: fetch them into Buildroot's cargo home instead (network once).
define HAKEYS_FETCH_CRATES
	cd $(@D) && $(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		cargo fetch --locked --manifest-path Cargo.toml
endef
HAKEYS_PRE_BUILD_HOOKS += HAKEYS_FETCH_CRATES
endif

ifeq ($(BR2_PACKAGE_HAKEYS_SUPPLICANT),y)
HAKEYS_CARGO_BUILD_OPTS += \
	-p hakeys-supplicant --bin hakeys-supplicant -p rpmb-sim --bin rpmb-sim
define HAKEYS_INSTALL_SUPPLICANT
	$(INSTALL) -D -m 0755 $(HAKEYS_BIN_DIR)/hakeys-supplicant \
		$(TARGET_DIR)/usr/sbin/hakeys-supplicant
	$(INSTALL) -D -m 0755 $(HAKEYS_BIN_DIR)/rpmb-sim \
		$(TARGET_DIR)/usr/bin/rpmb-sim
endef
# Our supplicant replaces tee-supplicant: mask optee-client's unit.
define HAKEYS_INSTALL_SUPPLICANT_UNITS
	$(INSTALL) -D -m 0644 $(HAKEYS_PKGDIR)/hakeys-supplicant.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hakeys-supplicant.service
	mkdir -p $(TARGET_DIR)/etc/systemd/system
	ln -sf /dev/null $(TARGET_DIR)/etc/systemd/system/tee-supplicant@.service
endef
else
# Start optee-client's tee-supplicant@teepriv0.service when the device
# appears. optee-client's own rule does the same, but its CMake installs it
# to etc/udev/rules.d under the /usr prefix Buildroot gives: /usr/etc, where
# udev does not look.
define HAKEYS_INSTALL_SUPPLICANT_UNITS
	$(INSTALL) -D -m 0644 $(HAKEYS_PKGDIR)/62-hakeys-tee-supplicant.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/62-hakeys-tee-supplicant.rules
endef
endif

define HAKEYS_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(HAKEYS_BIN_DIR)/teectl \
		$(TARGET_DIR)/usr/bin/teectl
	$(INSTALL) -D -m 0755 $(HAKEYS_BIN_DIR)/teed \
		$(TARGET_DIR)/usr/bin/teed
	$(INSTALL) -D -m 0755 $(HAKEYS_BIN_DIR)/teed-docker-proxy \
		$(TARGET_DIR)/usr/libexec/hakeys/teed-docker-proxy
	$(INSTALL) -D -m 0644 $(@D)/systemd/teed-policy.toml \
		$(TARGET_DIR)/etc/hakeys/policy.toml
	$(HAKEYS_INSTALL_SUPPLICANT)
endef

# The daemon's units come unchanged from the source's systemd/ folder; the
# drop-in orders teed after the supplicant unit this image really has.
# teed.socket puts teed's socket in /dev/hakeys, where Home Assistant and
# every add-on reach it (and cannot replace it); teed-docker-proxy gives
# teed containers' names without Docker's socket.
define HAKEYS_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/systemd/teed.socket \
		$(TARGET_DIR)/usr/lib/systemd/system/teed.socket
	$(INSTALL) -D -m 0644 $(@D)/systemd/teed.service \
		$(TARGET_DIR)/usr/lib/systemd/system/teed.service
	$(INSTALL) -D -m 0644 $(@D)/systemd/teed-docker-proxy.socket \
		$(TARGET_DIR)/usr/lib/systemd/system/teed-docker-proxy.socket
	$(INSTALL) -D -m 0644 $(@D)/systemd/teed-docker-proxy.service \
		$(TARGET_DIR)/usr/lib/systemd/system/teed-docker-proxy.service
	$(INSTALL) -D -m 0644 $(@D)/systemd/hakeys.tmpfiles.conf \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/hakeys.conf
	$(INSTALL) -D -m 0644 $(HAKEYS_PKGDIR)/teed-buildroot.conf \
		$(TARGET_DIR)/usr/lib/systemd/system/teed.service.d/50-buildroot.conf
	$(INSTALL) -D -m 0644 $(@D)/systemd/hakeys.sysusers.conf \
		$(TARGET_DIR)/usr/lib/sysusers.d/hakeys.conf
	$(INSTALL) -D -m 0644 $(HAKEYS_PKGDIR)/50-hakeys.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/50-hakeys.preset
	$(INSTALL) -D -m 0644 $(HAKEYS_PKGDIR)/61-hakeys-tee.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/61-hakeys-tee.rules
	$(HAKEYS_INSTALL_SUPPLICANT_UNITS)
endef

ifeq ($(BR2_PACKAGE_HAKEYS)$(BR2_PACKAGE_HAKEYS_SITE_RELEASE)$(BR_BUILDING),yyy)
ifeq ($(call qstrip,$(BR2_PACKAGE_HAKEYS_RELEASE_SITE)),)
$(error hakeys: set BR2_PACKAGE_HAKEYS_RELEASE_SITE to where hakeys-$(HAKEYS_VERSION).tar.gz is published)
endif
endif

$(eval $(cargo-package))
