//! The state directory's hygiene, without root: key files private and named
//! only by labels, one process per directory.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use epic_gue::hello::HelloKey;
use epic_standalone::standalone::{StandaloneError, lock_state_dir, node_key_file, tunnel_key};

/// A fresh directory under the system's temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("epic-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn names_that_would_leave_the_key_directory_are_refused() {
    let dir = Dir::new("names");
    for (tenant, cluster) in [
        ("acme", "../../escape"),
        ("..", "c1"),
        ("acme", "c1/../../x"),
        ("acme", ""),
        ("Acme", "c1"),
        ("acme", "c1.key"),
    ] {
        let err = tunnel_key(&dir.0, tenant, cluster).unwrap_err();
        assert!(
            matches!(err, StandaloneError::InvalidName { .. }),
            "{tenant}/{cluster}: {err}"
        );
        assert!(err.to_string().contains("DNS-1123"), "{err}");
    }
    // Nothing was written anywhere.
    assert!(!dir.0.join("keys").exists());
    assert!(!std::env::temp_dir().join("escape.key").exists());
    // Node names (a tenant's BackendSet names them) likewise.
    let cluster = HelloKey::new([3; 32]);
    for node in ["../../escape", "..", "n1/../x", "", "N1", ".n1", "n1."] {
        let err = node_key_file(&dir.0, "acme", "c1", node, &cluster).unwrap_err();
        assert!(
            matches!(err, StandaloneError::InvalidName { what: "node", .. }),
            "{node:?}: {err}"
        );
    }
    assert!(!dir.0.join("keys").exists());
}

#[test]
fn each_node_gets_its_own_derived_key_file() {
    let dir = Dir::new("node-keys");
    let cluster = HelloKey::new([3; 32]);
    let path = node_key_file(&dir.0, "acme", "c1", "node-1.example", &cluster).unwrap();
    assert_eq!(path, dir.0.join("keys/acme/c1/node-1.example.key"));
    let hex = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        HelloKey::from_hex(hex.trim()),
        Some(cluster.node_key("node-1.example"))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Written once: the same key is not written again.
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    node_key_file(&dir.0, "acme", "c1", "node-1.example", &cluster).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        written
    );
}

#[test]
fn a_key_file_others_can_read_is_refused_and_a_private_one_is_read_back() {
    let dir = Dir::new("keys");
    let key = tunnel_key(&dir.0, "acme", "c1").unwrap();
    let path = dir.0.join("keys/acme/c1.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(tunnel_key(&dir.0, "acme", "c1").unwrap(), key, "read back");

    for loose in [0o644, 0o640, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let err = tunnel_key(&dir.0, "acme", "c1").unwrap_err();
        match &err {
            StandaloneError::KeyPermissions { mode, .. } => assert_eq!(*mode, loose),
            other => panic!("{loose:o}: {other}"),
        }
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

#[test]
fn one_process_holds_a_state_directory_at_a_time() {
    let dir = Dir::new("lock");
    let held = lock_state_dir(&dir.0).unwrap();
    let err = lock_state_dir(&dir.0).unwrap_err();
    assert!(matches!(err, StandaloneError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
    drop(held);
    lock_state_dir(&dir.0).expect("free again once the holder is gone");
}
