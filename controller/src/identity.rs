//! Who is asking, and what they may do. The controller's own token (`--token-file`) is
//! the bootstrap administrator, `admin`; every other credential is one the controller
//! issued (`violinctl credential create`) and keeps only as a SHA-256 hash: an operator's
//! (`admin` or `read_only`) or a host's, which may register, follow its share and report
//! as that one host and nothing else.
use axum::http::Method;
use ring::{digest, rand::SecureRandom};
use violin_api::rest::Role;

/// The name the controller's own token goes by.
pub const ADMIN: &str = "admin";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// The issued credential's token hash (None: the controller's own token).
    pub credential: Option<String>,
}

/// A token's hash as the store keeps it.
pub fn hash(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh token: 32 random bytes.
pub fn new_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no randomness for a token"))?;
    Ok(format!("vt_{}", hex(&b)))
}

/// Compares without telling, by its time, how much of a guess was right (give it equal
/// lengths, such as two hashes: the length is not hidden).
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a host's own routes are: `/v1/hosts/{host}/...`.
const HOST_ROUTES: [&str; 8] = [
    "/v1/hosts/{host}/register",
    "/v1/hosts/{host}/sync",
    "/v1/hosts/{host}/ack",
    "/v1/hosts/{host}/vms",
    "/v1/hosts/{host}/traffic",
    "/v1/hosts/{host}/health",
    "/v1/hosts/{host}/measurements",
    "/v1/hosts/{host}/interfaces",
];

/// The `{host}` of a host route's concrete path.
fn host_of<'a>(route: &str, path: &'a str) -> Option<&'a str> {
    HOST_ROUTES
        .contains(&route)
        .then(|| path.strip_prefix("/v1/hosts/")?.split('/').next())
        .flatten()
}

/// GET, and HEAD (which axum serves wherever it serves GET).
fn reads(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// May `who` call `route` (the matched template) at `path` with `method`? Else why not.
pub fn authorize(who: &Identity, method: &Method, route: &str, path: &str) -> Result<(), String> {
    match who.role {
        Role::Admin => Ok(()),
        Role::ReadOnly if reads(method) => Ok(()),
        Role::ReadOnly => Err(format!(
            "credential {} is read-only: {method} {path} needs an admin's",
            who.name
        )),
        Role::Host => {
            // The host list tells a daemon whom to measure.
            if route == "/v1/hosts" && reads(method) {
                return Ok(());
            }
            match host_of(route, path) {
                Some(h) if h == who.name => Ok(()),
                _ => Err(format!(
                    "credential {0} is host {0}'s: it may only register, sync, acknowledge and report as {0}",
                    who.name
                )),
            }
        }
    }
}

/// Whether a request is a change worth the audit log: anything but reads, and but the
/// reports and acknowledgements hosts send as themselves many times a second.
pub fn audited(who: &Identity, method: &Method, route: &str) -> bool {
    if reads(method) {
        return false;
    }
    let report = matches!(
        route,
        "/v1/hosts/{host}/ack"
            | "/v1/hosts/{host}/vms"
            | "/v1/hosts/{host}/traffic"
            | "/v1/hosts/{host}/health"
            | "/v1/hosts/{host}/measurements"
    );
    !(report && who.role == Role::Host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, role: Role) -> Identity {
        Identity {
            name: name.into(),
            role,
            credential: None,
        }
    }

    #[test]
    fn a_host_acts_only_as_itself() {
        let h1 = who("h1", Role::Host);
        let reg = "/v1/hosts/{host}/register";
        assert!(authorize(&h1, &Method::POST, reg, "/v1/hosts/h1/register").is_ok());
        let e = authorize(&h1, &Method::POST, reg, "/v1/hosts/h2/register").unwrap_err();
        assert!(
            e.contains("only register, sync, acknowledge and report as h1"),
            "{e}"
        );
        let sync = "/v1/hosts/{host}/sync";
        assert!(authorize(&h1, &Method::GET, sync, "/v1/hosts/h2/sync").is_err());
        assert!(authorize(&h1, &Method::GET, "/v1/hosts", "/v1/hosts").is_ok());
        let env = "/v1/environments/{name}";
        assert!(authorize(&h1, &Method::PUT, env, "/v1/environments/blue").is_err());
        assert!(authorize(&h1, &Method::GET, env, "/v1/environments/blue").is_err());
    }

    #[test]
    fn read_only_operators_read_and_admins_do_all() {
        let env = "/v1/environments/{name}";
        let ro = who("ann", Role::ReadOnly);
        assert!(authorize(&ro, &Method::GET, env, "/v1/environments/blue").is_ok());
        let e = authorize(&ro, &Method::PUT, env, "/v1/environments/blue").unwrap_err();
        assert!(e.contains("read-only"), "{e}");
        let admin = who("bob", Role::Admin);
        assert!(authorize(&admin, &Method::DELETE, env, "/v1/environments/blue").is_ok());
    }

    #[test]
    fn tokens_are_random_and_kept_as_hashes() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, "vt_"));
        let (h1, admin) = (who("h1", Role::Host), who("admin", Role::Admin));
        assert!(audited(&admin, &Method::PUT, "/v1/environments/{name}"));
        assert!(audited(&h1, &Method::POST, "/v1/hosts/{host}/register"));
        assert!(!audited(&h1, &Method::POST, "/v1/hosts/{host}/traffic"));
        // An operator reporting for a host is out of the ordinary: recorded.
        assert!(audited(&admin, &Method::POST, "/v1/hosts/{host}/vms"));
        assert!(!audited(&admin, &Method::GET, "/v1/environments"));
        assert!(!audited(&admin, &Method::HEAD, "/v1/environments"));
        let ro = who("ann", Role::ReadOnly);
        assert!(authorize(&ro, &Method::HEAD, "/v1/environments", "/v1/environments").is_ok());
    }
}
