//! What the container tests (`tests/tests/containers.rs`) need: Debian's
//! `docker.io` (dockerd, containerd, runc, the docker CLI) and
//! `busybox-static` (the test image's root). The tests start their own
//! dockerd on a private socket and stop it; nothing here starts a service.
//!
//! Debian's maintainer scripts start `docker.service` and
//! `containerd.service` when a package is installed on a running system.
//! The tests never use those, and nothing the test command does may be left
//! running: so the packages are installed with a `policy-rc.d` that forbids
//! starting services (unless the machine already has one, as container
//! images do), which is removed afterwards.

use std::path::Path;
use std::process::Command;

use crate::Result;

const PACKAGES: &[&str] = &["docker.io", "busybox-static"];
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Install the container tests' packages, starting no service.
pub(crate) fn deps() -> Result {
    let missing = PACKAGES
        .iter()
        .any(|p| !crate::succeeds(Command::new("dpkg-query").args(["-W", "-f=${Status}", p])));
    let ours = missing && crate::is_root() && !Path::new(POLICY_RC_D).exists();
    if ours {
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# Written by hakeys' cargo xtask while it installs docker.io; removed after.\nexit 101\n",
        )
        .map_err(|e| format!("cannot write {POLICY_RC_D}: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {POLICY_RC_D} executable: {e}"))?;
    }
    let r = crate::apt_install(PACKAGES);
    if ours {
        std::fs::remove_file(POLICY_RC_D)
            .map_err(|e| format!("cannot remove {POLICY_RC_D}: {e}"))?;
    }
    r
}
