//! Which pages may follow the LiveReload server.
//!
//! A WebSocket is not held to the same-origin policy: any page open in the browser could connect
//! to `ws://127.0.0.1:35729` and read what the server sends, the files saved and a failure's
//! traceback with its code. A browser always sends `Origin` in a WebSocket handshake, so it is
//! checked. Allowed: no `Origin` (not a browser page), a browser extension (the LiveReload
//! extensions), a page on this machine or a private network (`localhost`, `127.0.0.1`,
//! `192.168.56.10`, `[fd00::1]`, `*.localhost`, `*.local`, `*.test`, `*.internal`: where a guest's
//! app is served), and the hosts given with `--livereload-origin`: `dev.example.com` (any port or
//! scheme), `*.example.com` (its subdomains), `null` (pages opened from files), `*` (any).

use std::net::{IpAddr, Ipv6Addr};

/// Schemes of browser extensions' pages.
const EXTENSIONS: [&str; 4] = ["chrome-extension", "moz-extension", "safari-web-extension", "extension"];
/// Name suffixes kept for local and private use (RFC 6761, RFC 6762, ICANN's `.internal`).
const LOCAL_SUFFIXES: [&str; 4] = [".localhost", ".local", ".test", ".internal"];

/// The origins allowed beyond the local ones.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Host names or addresses, lower case, without a port (`*` allows every origin).
    extra: Vec<String>,
}

impl Origins {
    /// Local origins plus `extra`: hosts, with or without a port or a scheme (only the host
    /// counts), `*.SUFFIX`, `null`, or `*`.
    pub fn new(extra: &[String]) -> Origins {
        let extra = extra
            .iter()
            .map(|entry| entry.trim().to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.as_str() {
                "*" | "null" => entry,
                _ if entry.starts_with("*.") => entry,
                _ => {
                    let origin = if entry.contains("://") { entry.clone() } else { format!("http://{entry}") };
                    host(&origin).unwrap_or(&entry).trim_start_matches('[').trim_end_matches(']').to_string()
                }
            })
            .collect();
        Origins { extra }
    }

    /// Whether a handshake with this `Origin` header (None when it has none) may connect.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::trim) else { return true };
        if self.extra.iter().any(|extra| extra == "*") || (origin == "null" && self.extra.iter().any(|e| e == "null")) {
            return true;
        }
        let Some((scheme, _)) = origin.split_once("://") else { return false };
        let scheme = scheme.to_ascii_lowercase();
        if EXTENSIONS.contains(&scheme.as_str()) {
            return true;
        }
        if scheme != "http" && scheme != "https" {
            return false;
        }
        let Some(host) = host(origin) else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        is_local(&host)
            || self.extra.iter().any(|extra| match extra.strip_prefix('*') {
                Some(suffix) => suffix.starts_with('.') && host.ends_with(suffix),
                None => *extra == host,
            })
    }
}

/// The host of `scheme://host[:port][/...]`, brackets kept for IPv6; None when there is none.
fn host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // A user part (`user@host`) is never in an Origin; refuse rather than guess which side counts.
    if authority.contains('@') {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => &authority[..v6.find(']')? + 2],
        None => authority.rsplit_once(':').map_or(authority, |(host, _port)| host),
    };
    (!host.is_empty()).then_some(host)
}

/// A loopback or private address, or a name kept for local use.
fn is_local(host: &str) -> bool {
    if host == "localhost" || LOCAL_SUFFIXES.iter().any(|suffix| host.ends_with(suffix)) {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || is_private_v6(ip)
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
        Err(_) => false,
    }
}

/// fc00::/7 (unique local) and fe80::/10 (link local).
fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_on_this_machine_or_a_private_network_and_extensions_connect() {
        let origins = Origins::default();
        for origin in [
            "http://localhost:8000",
            "http://127.0.0.1:8000",
            "https://LOCALHOST",
            "http://[::1]:8000",
            "http://192.168.56.10:8000",
            "http://10.0.2.15",
            "http://172.16.0.4:80",
            "http://[fd00::1]:8000",
            "http://[::ffff:127.0.0.1]:80",
            "http://myapp.test:8000",
            "http://app.localhost",
            "http://box.local",
            "chrome-extension://jnihajbhpnppcggbcgedagnkighmdlei",
            "moz-extension://2d0f6a2e-0000-4000-8000-000000000000",
        ] {
            assert!(origins.allows(Some(origin)), "{origin}");
        }
        assert!(origins.allows(None), "a client that is not a browser page");
    }

    #[test]
    fn other_sites_are_refused_unless_named() {
        let origins = Origins::default();
        for origin in [
            "https://evil.example",
            "http://8.8.8.8",
            "http://[2001:db8::1]",
            "http://localhost.evil.example",
            "http://evil.example/http://localhost",
            "http://localhost@evil.example",
            "null",
            "file://",
            "ftp://localhost",
            "",
            "http://",
        ] {
            assert!(!origins.allows(Some(origin)), "{origin:?}");
        }
        let named =
            Origins::new(&["dev.example.com".into(), "https://app.example:8443".into(), "[2001:db8::1]".into()]);
        assert!(named.allows(Some("https://DEV.example.com:8000")));
        assert!(named.allows(Some("http://app.example")));
        assert!(named.allows(Some("http://[2001:db8::1]:80")));
        assert!(!named.allows(Some("https://evil.example")));
        assert!(Origins::new(&["*".into()]).allows(Some("https://evil.example")));
        // Written as people write them: with a port and no scheme, a wildcard, pages from files.
        let written =
            Origins::new(&["Dev.Example.com:8000".into(), "[2001:db8::2]:8443".into(), "*.corp.example".into()]);
        assert!(written.allows(Some("http://dev.example.com:9000")));
        assert!(written.allows(Some("http://[2001:db8::2]")));
        assert!(written.allows(Some("https://app.corp.example")));
        assert!(!written.allows(Some("https://corp.example.evil")) && !written.allows(Some("https://xcorp.example")));
        assert!(!written.allows(Some("null")));
        assert!(Origins::new(&["null".into()]).allows(Some("null")));
    }

    #[test]
    fn the_host_is_cut_from_the_authority() {
        assert_eq!(host("http://a.b:80/x"), Some("a.b"));
        assert_eq!(host("http://[::1]:80"), Some("[::1]"));
        assert_eq!(host("http://[::1"), None);
        assert_eq!(host("http://:80"), None);
    }
}
