//! Namespace labels: `ha/core`, `addon/<slug>`, `boot/luks-data`.

use hakeys_proto::MAX_NAMESPACE_LEN;

/// Prefix of the namespaces that are only usable during the boot phase.
pub const BOOT_PREFIX: &str = "boot/";

/// Is `ns` a valid namespace label?
///
/// 1 to 64 bytes; one or more segments separated by `/`; each segment is
/// non-empty, made of `a-z 0-9 . _ -`, starts with a letter or digit (so no
/// segment can be `.` or `..`, and no label can hide a second `/`).
pub fn is_valid(ns: &str) -> bool {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
        return false;
    }
    ns.split('/').all(|seg| {
        let mut bytes = seg.bytes();
        match bytes.next() {
            Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
            _ => return false,
        }
        bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
    })
}

/// Is `ns` a boot namespace: `boot` itself or anything under `boot/`
/// (locked once the boot phase is over)? The one rule the engine's boot
/// lock and the daemon's refusal both use.
pub fn is_boot(ns: &str) -> bool {
    ns.strip_prefix("boot")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Does `ns` accept blobs sealed offline to the device's public key
/// (kind 2)? Anyone holding the public key can make one, so a namespace
/// whose value decides something before anyone can check it refuses them:
/// the boot namespaces (an offline attacker could otherwise swap the data
/// partition's key and volume for their own). A blob meant for one is
/// imported deliberately, by root, with `rewrap` (`teectl rewrap
/// --import-offline`), which turns it into a device blob.
pub fn accepts_offline(ns: &str) -> bool {
    !is_boot(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        for ns in [
            "ha/core",
            "addon/core_mosquitto",
            "boot/luks-data",
            "a",
            "x1/y.2/z-3",
        ] {
            assert!(is_valid(ns), "{ns}");
        }
        assert!(is_valid(&"a".repeat(64)));
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(65);
        for ns in [
            "",
            "/",
            "ha/",
            "/ha",
            "ha//core",
            "Ha/core",
            "ha/co re",
            "ha/../x",
            "ha/./x",
            ".",
            "..",
            "-x",
            "ha/-x",
            "ha/_x",
            "ha/\u{e9}",
            "ha\0x",
            "ha\\x",
            long.as_str(),
        ] {
            assert!(!is_valid(ns), "{ns:?}");
        }
    }

    #[test]
    fn boot_prefix() {
        assert!(is_boot("boot/luks-data"));
        // The bare `boot` is a boot namespace too: one rule for the engine and teed.
        assert!(is_boot("boot"));
        assert!(!is_boot("ha/boot/x"));
        assert!(!is_boot("bootx/y"));
    }

    #[test]
    fn offline_blobs_are_refused_in_boot_namespaces_only() {
        for ns in ["boot", "boot/luks-data", "boot/x/y"] {
            assert!(!accepts_offline(ns), "{ns}");
        }
        for ns in ["ha/core", "addon/x", "bootx", "ha/boot"] {
            assert!(accepts_offline(ns), "{ns}");
        }
    }
}
