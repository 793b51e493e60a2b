//! A receiver's address, `HOST[:PORT]`, parsed in one place for every source (`--to`, `--addr`,
//! `TOUCHWIRE_TO`, `remote` and `listen` in a config file): a mistake is a message that says the
//! fix, before anything goes near the network, and a missing port is [`DEFAULT_PORT`] everywhere.

use crate::protocol::DEFAULT_PORT;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// What an address is for: a listener may bind port 0 (the system picks one), a sender cannot
/// connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// An address to connect to (`--to`, `remote`).
    Connect,
    /// An address to bind (`--addr`, `listen`).
    Bind,
}

/// A host and a port, as checked by [`Address::parse`]. Shown as `HOST:PORT`, an IPv6 address
/// in brackets (`[::1]:9001`): the form that parses back to the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl ToSocketAddrs for Address {
    type Iter = std::vec::IntoIter<SocketAddr>;
    /// An IP address as it is; a name through the system's resolver.
    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)].into_iter()),
            Host::Name(name) => Ok((name.as_str(), self.port).to_socket_addrs()?.collect::<Vec<_>>().into_iter()),
        }
    }
}

impl Address {
    /// Parses `HOST`, `HOST:PORT`, `IPv4[:PORT]`, `IPv6` or `[IPv6][:PORT]`; the port defaults to
    /// [`DEFAULT_PORT`]. The error is a sentence ending in what to write instead.
    pub fn parse(text: &str, role: Use) -> Result<Address, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!(
                "the address is empty: write HOST or HOST:PORT, e.g. 192.168.56.10:{DEFAULT_PORT} (the port defaults to {DEFAULT_PORT})"
            ));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            let bare = rest.split('/').next().unwrap_or("");
            let fix = match Address::parse(bare, role) {
                Ok(addr) => addr.to_string(),
                Err(_) => format!("HOST:{DEFAULT_PORT}"),
            };
            return Err(format!("{scheme}:// is not part of an address: write HOST:PORT without a scheme: {fix}"));
        }
        if let Some(rest) = text.strip_prefix('[') {
            return bracketed(rest, role);
        }
        // More than one colon and no brackets: an IPv6 address alone, or a mistake.
        if text.matches(':').count() > 1 {
            return bare_ipv6(text);
        }
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let host = host_part(host, port)?;
        let port = match port {
            Some(port) => port_part(port, &host, role)?,
            None => DEFAULT_PORT,
        };
        Ok(Address { host, port })
    }

    /// The port (the default one when the text gave none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is an IP address (no resolver needed).
    pub fn is_ip(&self) -> bool {
        matches!(self.host, Host::Ip(_))
    }

    /// Whether this is a loopback IP address (a name is not known to be, before it resolves).
    pub fn is_loopback_ip(&self) -> bool {
        matches!(self.host, Host::Ip(ip) if ip.is_loopback())
    }
}

/// `[IPv6]` or `[IPv6]:PORT`, after the `[`.
fn bracketed(rest: &str, role: Use) -> Result<Address, String> {
    let Some((inside, after)) = rest.split_once(']') else {
        return Err(format!("a ']' is missing: write an IPv6 address as [IPv6]:PORT, e.g. [::1]:{DEFAULT_PORT}"));
    };
    let Ok(ip) = inside.parse::<Ipv6Addr>() else {
        let fix = if inside.parse::<IpAddr>().is_ok() || host_name(inside) {
            format!("write {inside}:PORT without brackets")
        } else {
            format!("e.g. [::1]:{DEFAULT_PORT}")
        };
        return Err(format!("{inside:?} in brackets is not an IPv6 address: brackets hold an IPv6 address; {fix}"));
    };
    let host = Host::Ip(IpAddr::V6(ip));
    let port = match after {
        "" => DEFAULT_PORT,
        _ => match after.strip_prefix(':') {
            Some(port) => port_part(port, &host, role)?,
            None => {
                return Err(format!(
                    "{after:?} after ']' is not a port: write [{ip}]:PORT, e.g. [{ip}]:{DEFAULT_PORT}"
                ));
            }
        },
    };
    Ok(Address { host, port })
}

/// An address with several colons and no brackets: an IPv6 address alone takes the default
/// port, unless its last group could as well be a port (`::1:9101`): that one is refused with
/// both readings, since guessing wrong would send to an address nobody meant.
fn bare_ipv6(text: &str) -> Result<Address, String> {
    let Ok(ip) = text.parse::<Ipv6Addr>() else {
        if let Some((ip, port)) = text.rsplit_once(':')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && let Ok(ip) = ip.parse::<Ipv6Addr>()
        {
            return Err(format!("an IPv6 address with a port needs brackets: write [{ip}]:{port}"));
        }
        return Err(format!(
            "{text:?} is not an address: write HOST:PORT, or an IPv6 address in brackets, e.g. [::1]:{DEFAULT_PORT}"
        ));
    };
    if let Some((head, last)) = text.rsplit_once(':')
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && last.parse::<u16>().is_ok_and(|p| p > 0)
        && let Ok(head) = head.parse::<Ipv6Addr>()
    {
        return Err(format!(
            "an IPv6 address with a port needs brackets: write [{head}]:{last} (or [{ip}] for the address \
             {ip} on port {DEFAULT_PORT})"
        ));
    }
    Ok(Address { host: Host::Ip(IpAddr::V6(ip)), port: DEFAULT_PORT })
}

/// The host before the colon (`port` is what follows it, for the message).
fn host_part(host: &str, port: Option<&str>) -> Result<Host, String> {
    if host.is_empty() {
        let port = port.unwrap_or("PORT");
        return Err(format!("no host before ':{port}': write HOST:{port}, e.g. 127.0.0.1:{port}"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("{host:?} is not an IPv4 address (four numbers 0 to 255, e.g. 192.168.56.10)"));
    }
    if !host_name(host) {
        return Err(format!(
            "{host:?} is not a host name or an IP address: write HOST:PORT, e.g. 192.168.56.10:{DEFAULT_PORT} or \
             guest.local:{DEFAULT_PORT}"
        ));
    }
    Ok(Host::Name(host.to_string()))
}

/// Whether `name` can be a DNS name: letters, digits, `-`, `_` and `.`, not starting with `-` or `.`.
fn host_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The port after the colon.
fn port_part(port: &str, host: &Host, role: Use) -> Result<u16, String> {
    let shown = Address { host: host.clone(), port: DEFAULT_PORT };
    let with_default = shown.to_string();
    let host_text = with_default.rsplit_once(':').map_or("HOST", |(h, _)| h);
    if port.is_empty() {
        return Err(format!("no port after ':': write {host_text}:PORT, or {host_text} alone for port {DEFAULT_PORT}"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "port {port:?} is not a number: write {host_text}:PORT with a port from 1 to 65535, e.g. {with_default}"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) if role == Use::Connect => {
            Err(format!("port 0 cannot be connected to: give the port the guest listens on, e.g. {with_default}"))
        }
        Ok(port) => Ok(port),
        Err(_) => Err(format!("port {port} is out of range: a port is 1 to 65535, e.g. {with_default}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn remote(text: &str) -> Result<String, String> {
        Address::parse(text, Use::Connect).map(|a| a.to_string())
    }

    #[test]
    fn good_addresses_take_the_default_port_only_when_they_give_none() {
        for (text, shown) in [
            ("guest", "guest:9001"),
            ("guest:7000", "guest:7000"),
            (" guest.local:7000 ", "guest.local:7000"),
            ("10.0.0.2", "10.0.0.2:9001"),
            ("10.0.0.2:1", "10.0.0.2:1"),
            ("::1", "[::1]:9001"),
            ("[::1]", "[::1]:9001"),
            ("[::1]:7000", "[::1]:7000"),
            ("fe80::1", "[fe80::1]:9001"),
            ("2001:db8::abcd", "[2001:db8::abcd]:9001"),
            ("2001:db8:0:0:0:0:0:1", "[2001:db8::1]:9001"),
            ("my_vm-2:65535", "my_vm-2:65535"),
        ] {
            assert_eq!(remote(text).as_deref(), Ok(shown), "{text:?}");
        }
    }

    #[test]
    fn each_mistake_says_the_fix() {
        for (text, says) in [
            ("", "the address is empty: write HOST or HOST:PORT"),
            ("   ", "the address is empty"),
            ("host:99999", "port 99999 is out of range: a port is 1 to 65535, e.g. host:9001"),
            ("host:abc", "port \"abc\" is not a number: write host:PORT"),
            ("host:-1", "port \"-1\" is not a number"),
            ("host:+1", "port \"+1\" is not a number"),
            ("host:", "no port after ':': write host:PORT, or host alone for port 9001"),
            (":9001", "no host before ':9001'"),
            ("host:0", "port 0 cannot be connected to"),
            ("http://host:9001", "write HOST:PORT without a scheme: host:9001"),
            ("tcp://host", "without a scheme: host:9001"),
            ("http://[::1]:80/x", "without a scheme: [::1]:80"),
            ("::1:9101", "needs brackets: write [::1]:9101 (or [::1:9101] for the address ::1:9101 on port 9001)"),
            ("fe80::1:2", "write [fe80::1]:2"),
            ("fe80::1:99999", "needs brackets: write [fe80::1]:99999"),
            ("::1:abc:x", "is not an address"),
            ("[::1", "a ']' is missing"),
            ("[::1]x", "\"x\" after ']' is not a port: write [::1]:PORT"),
            ("[::1]:abc", "port \"abc\" is not a number: write [::1]:PORT"),
            ("[host]:1", "brackets hold an IPv6 address; write host:PORT without brackets"),
            ("[1.2.3.4]", "write 1.2.3.4:PORT without brackets"),
            ("300.1.2.3:9001", "\"300.1.2.3\" is not an IPv4 address"),
            ("ho st:1", "\"ho st\" is not a host name or an IP address"),
            ("user@host", "is not a host name"),
            ("host/app:1", "is not a host name"),
            ("-x", "is not a host name"),
        ] {
            let err = remote(text).expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_listener_may_bind_port_0() {
        assert_eq!(Address::parse("127.0.0.1:0", Use::Bind).unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(Address::parse("0.0.0.0", Use::Bind).unwrap().to_string(), "0.0.0.0:9001");
        assert!(Address::parse("127.0.0.1:0", Use::Connect).is_err());
    }

    #[test]
    fn resolves_an_ip_without_a_resolver() {
        let addr = Address::parse("[::1]:7000", Use::Connect).unwrap();
        let all: Vec<_> = addr.to_socket_addrs().unwrap().collect();
        assert_eq!(all, vec!["[::1]:7000".parse::<SocketAddr>().unwrap()]);
        assert!(addr.is_loopback_ip() && addr.port() == 7000);
        assert!(!Address::parse("localhost", Use::Bind).unwrap().is_loopback_ip());
    }

    proptest! {
        /// Whatever is shown parses back to the same address: messages, config and the wire agree.
        #[test]
        fn what_is_shown_parses_back(text in "\\PC{0,40}") {
            if let Ok(addr) = Address::parse(&text, Use::Bind) {
                prop_assert_eq!(Address::parse(&addr.to_string(), Use::Bind), Ok(addr));
            }
        }

        /// Every socket address parses to itself, port and all.
        #[test]
        fn every_socket_address_parses_to_itself(addr in any::<SocketAddr>()) {
            let addr = match addr {
                // Flow and scope ids are not part of an address one types.
                SocketAddr::V6(v6) => SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port()),
                v4 => v4,
            };
            let parsed = Address::parse(&addr.to_string(), Use::Bind).map_err(TestCaseError::fail)?;
            prop_assert_eq!(parsed.to_socket_addrs().unwrap().collect::<Vec<_>>(), vec![addr]);
        }

        /// Host names and ports from the full range: a valid one parses, an invalid one says the range.
        #[test]
        fn ports_are_checked_against_their_range(port in 0u32..200_000) {
            let result = Address::parse(&format!("guest:{port}"), Use::Connect);
            match port {
                1..=65535 => prop_assert_eq!(result.map(|a| a.port()), Ok(port as u16)),
                _ => prop_assert!(result.is_err()),
            }
        }
    }
}
