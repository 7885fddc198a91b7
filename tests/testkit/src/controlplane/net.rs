//! Loopback ports and the apiserver's advertise address.

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use anyhow::{Context, Result};

/// Picks `N` distinct free ports on 127.0.0.1 (bind to port 0, read the port, close).
///
/// Another process may grab a port before the control plane binds it; callers retry the start
/// when a child reports `address already in use`.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut ports = [0u16; N];
    // Hold every listener until all ports are chosen, so the ports are distinct.
    let mut held = Vec::with_capacity(N);
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        *port = listener
            .local_addr()
            .context("reading a bound port")?
            .port();
        held.push(listener);
    }
    Ok(ports)
}

/// An address that never belongs to a real host (TEST-NET-2, RFC 5737), advertised when the
/// host has neither a default route nor a non-loopback address. Nothing connects to the
/// advertise address in a test control plane; it only ends up in the `kubernetes` Endpoints.
const PLACEHOLDER_ADVERTISE_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

/// The `--advertise-address` to pass, if one is needed.
///
/// kube-apiserver derives its advertise address from the interface of the default route and fails
/// to start when there is none ("Unable to find suitable network address", controller-runtime#1749);
/// loopback is rejected. So when the host has no default route, use the first non-loopback local
/// IPv4 address, or failing that a documentation-range placeholder.
pub(crate) fn advertise_address() -> Option<IpAddr> {
    if has_default_route() {
        return None;
    }
    let ip = non_loopback_ipv4().unwrap_or(PLACEHOLDER_ADVERTISE_ADDRESS);
    tracing::info!(
        advertise_address = %ip,
        "no default route: passing --advertise-address to kube-apiserver"
    );
    Some(ip)
}

/// Whether the host has an IPv4 or IPv6 default route (assumed when /proc cannot be read).
fn has_default_route() -> bool {
    let Ok(v4) = std::fs::read_to_string("/proc/net/route") else {
        return true;
    };
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    let v4_default = v4.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000")
    });
    // dest dest_prefix src src_prefix next_hop metric refcnt use flags iface
    let v6_default = std::fs::read_to_string("/proc/net/ipv6_route").is_ok_and(|v6| {
        v6.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first().is_some_and(|d| d.chars().all(|c| c == '0'))
                && fields.get(1) == Some(&"00")
                && fields.get(9).is_some_and(|iface| *iface != "lo")
        })
    });
    v4_default || v6_default
}

/// The first IPv4 address of a local interface that is not loopback, link-local or unspecified.
fn non_loopback_ipv4() -> Option<IpAddr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a linked list that we only read and then free once.
    unsafe {
        if libc::getifaddrs(&mut addrs) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = addrs;
        while let Some(ifa) = cur.as_ref() {
            if let Some(addr) = ifa.ifa_addr.as_ref()
                && libc::c_int::from(addr.sa_family) == libc::AF_INET
            {
                let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
                    found = Some(IpAddr::V4(ip));
                    break;
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(addrs);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports::<3>().expect("free ports");
        assert!(ports.iter().all(|p| *p != 0));
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
    }
}
