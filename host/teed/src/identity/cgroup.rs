//! Which Docker container a process is in, from `/proc/<pid>/cgroup`.
//!
//! Docker puts every process of a container in a cgroup named after the
//! container's 64-hex id, in one of two layouts:
//!
//! - the `cgroupfs` driver: `.../docker/<id>` (seen here as
//!   `0::/docker/<id>`, and in each cgroup v1 hierarchy as
//!   `4:memory:/docker/<id>`);
//! - the `systemd` driver: `.../docker-<id>.scope` (for example
//!   `0::/system.slice/docker-<id>.scope`).
//!
//! Only the host (the container runtime, root) creates cgroups above a
//! container's own, and a container can at most create cgroups *below* its
//! own (a privileged one, with a writable cgroup file system). So the first
//! match from the root of each path is the container's id; whatever is
//! nested under it (`.../docker-<id>.scope/docker-<other>.scope`, Docker
//! in Docker) is ignored.
//!
//! Every line of the file must agree: a process whose lines name two
//! different containers is refused (it cannot happen unless someone moved
//! it by hand, in one cgroup v1 hierarchy). Lines that name no container
//! (`0::/` in cgroup v1 "hybrid" mode, where Docker uses the v1 hierarchies)
//! are neutral. A process no line places in a container is a host process;
//! so is one whose file is empty or only `0::/` (a system without cgroup
//! hierarchies, or with none mounted, like an initramfs that never mounts
//! cgroupfs: no container can exist there, since Docker needs cgroups).
//! Other runtimes' layouts (podman's `libpod-<id>.scope`, Kubernetes) are not
//! recognised: their processes count as host processes and are identified
//! by uid and gid only (HA OS runs Docker alone).
//!
//! The parser is pure and total: any text gives an answer or an error.

use std::fmt;

/// A Docker container id: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// `text` if it is 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<ContainerId> {
        (text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| ContainerId(text.to_owned()))
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, as `docker ps` shows them.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContainerId({})", self.short())
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the cgroup file places a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In no container Docker made.
    Host,
    /// In this container.
    Container(ContainerId),
}

/// The container id a cgroup path names, the outermost one.
fn container_in_path(path: &str) -> Option<ContainerId> {
    let mut segments = path.split('/').filter(|s| !s.is_empty()).peekable();
    while let Some(seg) = segments.next() {
        if seg == "docker" {
            if let Some(id) = segments.peek().and_then(|next| ContainerId::parse(next)) {
                return Some(id);
            }
        } else if let Some(id) = seg
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
            .and_then(ContainerId::parse)
        {
            return Some(id);
        }
    }
    None
}

/// Parse the text of `/proc/<pid>/cgroup`.
pub fn parse(text: &str) -> Result<Place, String> {
    let mut found: Option<ContainerId> = None;
    for line in text.lines() {
        // hierarchy-id:controllers:path (the path may itself hold ':').
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("a cgroup line is not `id:controllers:path`".into());
        };
        if hier.is_empty() || !hier.bytes().all(|b| b.is_ascii_digit()) || !path.starts_with('/') {
            return Err("a cgroup line is not `id:controllers:/path`".into());
        }
        if let Some(id) = container_in_path(path) {
            match &found {
                Some(f) if *f != id => {
                    return Err(format!(
                        "the process is in the cgroups of two containers ({} and {})",
                        f.short(),
                        id.short()
                    ))
                }
                Some(_) => {}
                None => found = Some(id),
            }
        }
    }
    // No lines (no hierarchy at all): nothing places the process in a
    // container, so it is a host process, identified by uid and gid.
    Ok(found.map_or(Place::Host, Place::Container))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6";
    const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn id(s: &str) -> Place {
        Place::Container(ContainerId::parse(s).unwrap())
    }

    #[test]
    fn cgroup_v2_cgroupfs_driver() {
        assert_eq!(parse(&format!("0::/docker/{A}\n")), Ok(id(A)));
        // Nested below the container's own cgroup (systemd in a container).
        assert_eq!(parse(&format!("0::/docker/{A}/init.scope\n")), Ok(id(A)));
        // Under a parent (a custom --cgroup-parent, or dockerd in a slice).
        assert_eq!(parse(&format!("0::/process_api/docker/{A}\n")), Ok(id(A)));
    }

    #[test]
    fn cgroup_v2_systemd_driver() {
        assert_eq!(
            parse(&format!("0::/system.slice/docker-{A}.scope\n")),
            Ok(id(A))
        );
        assert_eq!(
            parse(&format!("0::/system.slice/docker-{A}.scope/sub\n")),
            Ok(id(A))
        );
    }

    #[test]
    fn cgroup_v1_hybrid_as_docker_made_it_here() {
        // Seen on this machine kind: every v1 hierarchy names the
        // container; so does the unified one.
        let text = format!(
            "9:name=systemd:/docker/{A}\n8:pids:/docker/{A}\n4:memory:/docker/{A}\n1:cpu:/docker/{A}\n0::/docker/{A}\n"
        );
        assert_eq!(parse(&text), Ok(id(A)));
        // The unified line may be the root while v1 lines name it.
        let text = format!("4:memory:/docker/{A}\n1:cpu,cpuacct:/docker/{A}\n0::/\n");
        assert_eq!(parse(&text), Ok(id(A)));
    }

    #[test]
    fn the_outermost_container_wins() {
        // A (privileged) container can create cgroups below its own, named
        // like another container's: they never override its own id.
        assert_eq!(
            parse(&format!(
                "0::/system.slice/docker-{A}.scope/docker-{B}.scope\n"
            )),
            Ok(id(A))
        );
        assert_eq!(parse(&format!("0::/docker/{A}/docker/{B}\n")), Ok(id(A)));
    }

    #[test]
    fn host_processes() {
        for text in [
            "0::/\n",
            "0::/system.slice/teed.service\n",
            "0::/user.slice/user-1000.slice/session-2.scope\n",
            "4:memory:/process_api/f091a425300d10c95dcabb97a9a1721d\n0::/\n",
            // Docker's own daemon, and BuildKit's build steps.
            "0::/system.slice/docker.service\n",
            "0::/docker/buildkit/abcdef\n",
            // Not 64 lowercase hex digits.
            "0::/docker/1EADBEC5C29449835A2D80F19B69220672308202E2A4CC6647BA8E20B0727EA6\n",
            "0::/docker/1eadbec5c294\n",
            "0::/system.slice/docker-1eadbec5c294.scope\n",
            "0::/system.slice/libpod-1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6.scope\n",
        ] {
            assert_eq!(parse(text), Ok(Place::Host), "{text}");
        }
        // A path with ':' in it is still one path.
        assert_eq!(parse("0::/a:b\n"), Ok(Place::Host));
    }

    #[test]
    fn no_cgroup_hierarchy_mounted_is_a_host_process() {
        // A guest whose init never mounts cgroupfs (the QEMU target): the
        // kernel prints `0::/` or, with no hierarchy at all, nothing. No
        // container can exist there: such a process is matched by uid/gid
        // rules, never treated as unidentified.
        for text in ["", "0::/\n", "0::/"] {
            assert_eq!(parse(text), Ok(Place::Host), "{text:?}");
        }
    }

    #[test]
    fn disagreeing_lines_and_garbage_are_errors() {
        let two = format!("4:memory:/docker/{A}\n0::/docker/{B}\n");
        assert!(parse(&two).unwrap_err().contains("two containers"));
        for text in ["garbage\n", "x::/\n", "0::relative\n", "0:/\n", ":::\n"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn container_ids() {
        let a = ContainerId::parse(A).unwrap();
        assert_eq!(a.short(), "1eadbec5c294");
        assert_eq!(a.to_string(), A);
        assert!(ContainerId::parse(&A[1..]).is_none());
        assert!(ContainerId::parse(&format!("{A}0")).is_none());
        assert!(ContainerId::parse(&A.replace('e', "g")).is_none());
    }
}
