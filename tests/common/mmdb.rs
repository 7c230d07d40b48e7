//! A small country database in MaxMind's format, written by the tests (no
//! third-party data is committed): an IPv6 search tree with 32-bit
//! records (IPv4 networks under `::/96`, as MaxMind's own databases keep
//! them), a data section of `{"country": {"iso_code": ..}}` maps and the
//! metadata map, per the MaxMind DB File Format 2.0.
#![allow(dead_code)]

use std::net::IpAddr;

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(u32),
    Data(u32),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29);
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64, bytes: usize) {
    let be = v.to_be_bytes();
    control(out, kind, bytes);
    out.extend_from_slice(&be[8 - bytes..]);
}

/// The bits of `ip` as a 128-bit IPv6 address (IPv4 under `::/96`).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A database mapping each `(network, prefix length, country)`.
pub fn country_db(networks: &[(&str, u8, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    let mut data = Vec::new();
    for &(net, len, code) in networks {
        let ip: IpAddr = net.parse().unwrap();
        let len = if ip.is_ipv4() {
            96 + len as u32
        } else {
            len as u32
        };
        let offset = data.len() as u32;
        control(&mut data, 7, 1);
        string(&mut data, "country");
        control(&mut data, 7, 1);
        string(&mut data, "iso_code");
        string(&mut data, code);
        let b = bits(ip);
        let mut node = 0usize;
        for depth in 0..len {
            let bit = ((b >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n as usize,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n as u32);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len() as u32;
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(offset) => count + 16 + offset,
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    let mut meta = Vec::new();
    control(&mut meta, 7, 9);
    string(&mut meta, "binary_format_major_version");
    uint(&mut meta, 5, 2, 2);
    string(&mut meta, "binary_format_minor_version");
    uint(&mut meta, 5, 0, 2);
    string(&mut meta, "build_epoch");
    uint(&mut meta, 9, 1_764_547_200, 8);
    string(&mut meta, "database_type");
    string(&mut meta, "Tollgate-Test-Country");
    string(&mut meta, "description");
    control(&mut meta, 7, 1);
    string(&mut meta, "en");
    string(&mut meta, "test data");
    string(&mut meta, "ip_version");
    uint(&mut meta, 5, 6, 2);
    string(&mut meta, "languages");
    control(&mut meta, 11, 1);
    string(&mut meta, "en");
    string(&mut meta, "node_count");
    uint(&mut meta, 6, count as u64, 4);
    string(&mut meta, "record_size");
    uint(&mut meta, 5, 32, 2);
    out.extend_from_slice(&meta);
    out
}
