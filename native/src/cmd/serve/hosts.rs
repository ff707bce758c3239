//! The `Host` a request may name. A web page elsewhere can point its own DNS name at 127.0.0.1
//! (DNS rebinding) and read the run through the visitor's browser; the browser then sends that
//! name as `Host`, so only names that cannot be rebound are answered: `localhost`, loopback
//! addresses, the address the server is bound to (any IP address when bound to all interfaces),
//! and the names given with `--allow-host`.

use anyhow::{bail, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The hosts a server bound to one address answers to.
#[derive(Debug)]
pub struct Hosts {
    bound: IpAddr,
    /// Lower case, without a trailing `.`.
    names: Vec<String>,
}

impl Hosts {
    /// Checks each `--allow-host` name: a DNS name (letters, digits, `-`, `.`), no port, no scheme,
    /// not an IP address (those are decided by the bound address).
    pub fn new(bound: IpAddr, allow: &[String]) -> Result<Hosts> {
        let mut names = Vec::new();
        for name in allow {
            let n = name.trim_end_matches('.').to_ascii_lowercase();
            let ok = !n.is_empty()
                && n.len() <= 253
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && n.split('.').all(|label| !label.is_empty() && !label.starts_with('-'))
                && n.parse::<Ipv4Addr>().is_err();
            if !ok {
                bail!("--allow-host takes a host name such as mybox.local (no port, no scheme, not an IP address), not `{name}`");
            }
            names.push(n);
        }
        Ok(Hosts { bound, names })
    }

    /// Whether a request whose `Host` is `host` (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`)
    /// is answered. Any port is accepted (a tunnel may forward another port to this one).
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = without_port(host) else { return false };
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok_and(|ip| self.allows_ip(IpAddr::V6(ip)));
        }
        if let Ok(ip) = name.parse::<Ipv4Addr>() {
            return self.allows_ip(IpAddr::V4(ip));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.names.contains(&name)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip == self.bound || self.bound.is_unspecified()
    }
}

/// `host` without its `:port`, when the port (if any) is a number.
fn without_port(host: &str) -> Option<&str> {
    let (name, port) = match host.rfind(':') {
        // `[::1]` alone: the last `:` is inside the brackets.
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bound: &str, allow: &[&str]) -> Hosts {
        Hosts::new(bound.parse().unwrap(), &allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn loopback_binds_answer_localhost_names_only() {
        let h = hosts("127.0.0.1", &[]);
        for ok in ["localhost", "LOCALHOST:8080", "localhost.", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:9000", "127.0.0.2:1"] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "", ":8080", "evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.5:8080",
            "localhost:x", "localhost:", "[::1", "::1", "[fe80::1]:80", "127.0.0.1:8080:80",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }

    #[test]
    fn all_interfaces_answer_ip_addresses_and_allowed_names() {
        let h = hosts("0.0.0.0", &["MyBox.lan"]);
        for ok in ["192.168.1.7:8080", "[fe80::1]:8080", "localhost", "mybox.lan:8080", "mybox.LAN"] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "otherbox.lan", "mybox.lan.evil.example"] {
            assert!(!h.allows(bad), "{bad}");
        }
        let one = hosts("192.168.1.7", &[]);
        assert!(one.allows("192.168.1.7:8080") && !one.allows("192.168.1.8:8080"));
    }

    #[test]
    fn allowed_names_are_checked() {
        for bad in ["", "http://x", "x:80", "a/b", "1.2.3.4", "-x.lan", "a..b", "a b"] {
            assert!(Hosts::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
