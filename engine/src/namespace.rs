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
}
