//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): a daemon tells the manager
//! it is ready, reloading or stopping by a datagram to `$NOTIFY_SOCKET`. Outside systemd
//! the variable is unset and nothing is sent.
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`); Ok(false) when not under a manager that listens.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // "@name" is a socket in the abstract namespace.
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_hears_the_state() {
        let dir = std::env::temp_dir().join(format!("violin-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        // The variable is the process's; this test is the only one in the crate to set it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
