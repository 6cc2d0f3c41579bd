################################################################################
#
# hakeys-ta
#
################################################################################

# The same source as the hakeys package (keep the versions in step); the TA
# is a Cargo workspace of its own in ta/, vendored on its own.
HAKEYS_TA_VERSION = 0.1.0
# OP-TEE's TA anti-rollback (ta_ver.db) refuses an older TA once a newer one
# ran, by this number: MAJOR*65536 + MINOR*256 + PATCH of the release, so
# that reinstalling an older TA cannot undo a security fix.
HAKEYS_TA_ROLLBACK_VERSION = $(shell echo $(HAKEYS_TA_VERSION) | \
	awk -F. '{ print $$1 * 65536 + $$2 * 256 + $$3 }')
ifeq ($(BR2_PACKAGE_HAKEYS_SITE_LOCAL),y)
HAKEYS_TA_SITE = $(BR2_EXTERNAL_HAKEYS_PATH)/..
HAKEYS_TA_SITE_METHOD = local
HAKEYS_TA_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /ta/target --exclude /.cache \
	--exclude /fuzz --exclude /buildroot
else
# The same published file as hakeys (see hakeys.mk), vendored here for the
# TA's own workspace and stored as hakeys-ta-$(VERSION)-cargoN.tar.gz.
HAKEYS_TA_SITE = $(call qstrip,$(BR2_PACKAGE_HAKEYS_RELEASE_SITE))/hakeys-$(HAKEYS_TA_VERSION).tar.gz?buildroot-path=filename
endif
HAKEYS_TA_LICENSE = Apache-2.0
HAKEYS_TA_LICENSE_FILES = LICENSE
HAKEYS_TA_SUBDIR = ta
HAKEYS_TA_DEPENDENCIES = optee-os host-python3 host-python-cryptography

# ta/Cargo.toml's release profile, as qemu/build-ta.sh builds it, whatever
# BR2_OPTIMIZE_* and BR2_ENABLE_LTO choose for the rest of the system.
# optee-utee-build reads the dev kit from TA_DEV_KIT_DIR and preprocesses
# its linker script with $(CC); ta/.cargo/config.toml adds -nostartfiles.
HAKEYS_TA_CARGO_ENV = \
	TA_DEV_KIT_DIR=$(OPTEE_OS_SDK) \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
	CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false
HAKEYS_TA_ELF = $(HAKEYS_TA_SRCDIR)/target/$(RUSTC_TARGET_NAME)/release/hakeys-ta
HAKEYS_TA_OUT = $(@D)/hakeys-ta-out

ifeq ($(BR2_PACKAGE_HAKEYS_TA_DEV_KEY),y)
HAKEYS_TA_SIGN_KEY = $(OPTEE_OS_SDK)/keys/default_ta.pem
else
HAKEYS_TA_SIGN_KEY = $(call qstrip,$(BR2_PACKAGE_HAKEYS_TA_SIGN_KEY))
endif

ifeq ($(BR2_PACKAGE_HAKEYS_SITE_LOCAL),y)
# A local source skips the download step, where Buildroot vendors the
# crates: fetch them into Buildroot's cargo home instead (network once).
define HAKEYS_TA_FETCH_CRATES
	cd $(HAKEYS_TA_SRCDIR) && $(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		cargo fetch --locked
endef
HAKEYS_TA_PRE_BUILD_HOOKS += HAKEYS_TA_FETCH_CRATES
endif

# Build, strip and sign as qemu/build-ta.sh does; the UUID is proto/uuid.txt.
define HAKEYS_TA_BUILD_CMDS
	cd $(HAKEYS_TA_SRCDIR) && \
		$(TARGET_MAKE_ENV) \
		$(TARGET_CONFIGURE_OPTS) \
		$(PKG_CARGO_ENV) \
		$(HAKEYS_TA_CARGO_ENV) \
		cargo build --offline --release --locked
	mkdir -p $(HAKEYS_TA_OUT)
	$(TARGET_OBJCOPY) --strip-unneeded $(HAKEYS_TA_ELF) \
		$(HAKEYS_TA_OUT)/hakeys-ta.stripped.elf
	uuid=$$(tr -d ' \n' < $(@D)/proto/uuid.txt) && \
		$(HOST_DIR)/bin/python3 $(OPTEE_OS_SDK)/scripts/sign_encrypt.py \
		sign-enc --uuid $$uuid --ta-version $(HAKEYS_TA_ROLLBACK_VERSION) \
		--key $(HAKEYS_TA_SIGN_KEY) \
		--in $(HAKEYS_TA_OUT)/hakeys-ta.stripped.elf \
		--out $(HAKEYS_TA_OUT)/$$uuid.ta
endef

define HAKEYS_TA_INSTALL_TARGET_CMDS
	uuid=$$(tr -d ' \n' < $(@D)/proto/uuid.txt) && \
		$(INSTALL) -D -m 0444 $(HAKEYS_TA_OUT)/$$uuid.ta \
		$(TARGET_DIR)/lib/optee_armtz/$$uuid.ta
endef

ifeq ($(BR2_PACKAGE_HAKEYS_TA)$(BR_BUILDING),yy)
ifeq ($(HAKEYS_TA_SIGN_KEY),)
$(error hakeys-ta: set BR2_PACKAGE_HAKEYS_TA_SIGN_KEY to the key OP-TEE OS trusts, or select BR2_PACKAGE_HAKEYS_TA_DEV_KEY (QEMU and tests only))
endif
endif

$(eval $(cargo-package))
