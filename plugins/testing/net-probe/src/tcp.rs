//! One TCP item: look the name up (`wasi:sockets/ip-name-lookup`), connect to the addresses
//! in turn until one answers (`wasi:sockets/tcp`), send the text, read the reply.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::{Value, json};
use wasip2::clocks::monotonic_clock;
use wasip2::io::poll;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wasip2::sockets::{ip_name_lookup, tcp_create_socket};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpItem {
    /// A name (looked up) or an address literal (not looked up; IPv6 with or without brackets).
    host: String,
    port: u16,
    /// Text to send once connected.
    send: Option<String>,
    /// Read a reply even without `send` (a server that speaks first).
    #[serde(default)]
    read: bool,
    /// Most bytes of the reply to read.
    #[serde(default = "read_bytes")]
    read_bytes: u64,
    /// How long to wait for the reply's first byte; after it, reading stops once nothing
    /// more comes for 100 ms, at `read_bytes`, or when the peer closes.
    #[serde(default = "read_ms")]
    read_ms: u64,
    /// How long to wait for the connection.
    #[serde(default = "connect_ms")]
    connect_ms: u64,
    /// Shut the sending side down after `send`, so the peer sees the end of the stream.
    #[serde(default)]
    shutdown: bool,
}

fn read_bytes() -> u64 {
    4096
}

fn read_ms() -> u64 {
    2000
}

fn connect_ms() -> u64 {
    5000
}

const MS: u64 = 1_000_000;

fn show_ip(ip: IpAddress) -> String {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).to_string(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            Ipv6Addr::new(a, b, c, d, e, f, g, h).to_string()
        }
    }
}

fn literal(host: &str) -> Option<IpAddress> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<Ipv4Addr>() {
        let [a, b, c, d] = ip.octets();
        return Some(IpAddress::Ipv4((a, b, c, d)));
    }
    let ip = bare.parse::<Ipv6Addr>().ok()?;
    let [a, b, c, d, e, f, g, h] = ip.segments();
    Some(IpAddress::Ipv6((a, b, c, d, e, f, g, h)))
}

fn lookup(network: &Network, name: &str) -> Result<Vec<IpAddress>, ErrorCode> {
    let stream = ip_name_lookup::resolve_addresses(network, name)?;
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => found.push(ip),
            Ok(None) => return Ok(found),
            Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(e),
        }
    }
}

/// Waits for `pollable` at most `ms`; whether it became ready.
fn wait(pollable: &poll::Pollable, ms: u64) -> bool {
    let timer = monotonic_clock::subscribe_duration(ms.saturating_mul(MS));
    let ready = poll::poll(&[pollable, &timer]);
    ready.contains(&0)
}

type Streams = (InputStream, OutputStream);

fn connect_one(
    network: &Network,
    ip: IpAddress,
    port: u16,
    ms: u64,
) -> Result<(TcpSocket, Streams), ErrorCode> {
    let (family, address) = match ip {
        IpAddress::Ipv4(address) => (
            IpAddressFamily::Ipv4,
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address }),
        ),
        IpAddress::Ipv6(address) => (
            IpAddressFamily::Ipv6,
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port,
                flow_info: 0,
                address,
                scope_id: 0,
            }),
        ),
    };
    let socket = tcp_create_socket::create_tcp_socket(family)?;
    socket.start_connect(network, address)?;
    let pollable = socket.subscribe();
    loop {
        if !wait(&pollable, ms) {
            drop(pollable);
            return Err(ErrorCode::Timeout);
        }
        match socket.finish_connect() {
            Err(ErrorCode::WouldBlock) => continue,
            Err(e) => {
                drop(pollable);
                return Err(e);
            }
            Ok(streams) => {
                drop(pollable);
                return Ok((socket, streams));
            }
        }
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(io) => format!("stream-error: {}", io.to_debug_string()),
    }
}

/// Reads up to `limit` bytes: waits `first_ms` for the first, then stops after 100 ms of
/// silence, at the limit, or at the end of the stream.
fn receive(input: &InputStream, limit: u64, first_ms: u64) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    let pollable = input.subscribe();
    let result = loop {
        if reply.len() as u64 >= limit {
            break Ok(());
        }
        let patience = if reply.is_empty() { first_ms } else { 100 };
        if !wait(&pollable, patience) {
            break Ok(());
        }
        match input.read(limit - reply.len() as u64) {
            Ok(chunk) => reply.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(()),
            Err(e) => break Err(stream_error(e)),
        }
    };
    drop(pollable);
    result.map(|()| reply)
}

pub fn connect(item: TcpItem) -> Value {
    let network = instance_network();
    let mut report = json!({
        "host": item.host,
        "port": item.port,
        "looked_up": false,
        "resolved": [],
        "connected": false,
        "address": null,
        "reply": null,
        "error": null,
        "stage": null,
    });
    let fail = |report: &mut Value, stage: &str, error: String| {
        report["error"] = error.into();
        report["stage"] = stage.into();
    };
    let addresses = match literal(&item.host) {
        Some(ip) => vec![ip],
        None => {
            report["looked_up"] = true.into();
            match lookup(&network, &item.host) {
                Ok(found) => found,
                Err(e) => {
                    fail(&mut report, "lookup", e.name().into());
                    return report;
                }
            }
        }
    };
    report["resolved"] = addresses
        .iter()
        .map(|ip| Value::String(show_ip(*ip)))
        .collect();
    if addresses.is_empty() {
        fail(&mut report, "lookup", "no-address".into());
        return report;
    }
    let mut last = None;
    let mut connection = None;
    for ip in &addresses {
        match connect_one(&network, *ip, item.port, item.connect_ms) {
            Ok(connected) => {
                report["address"] = match ip {
                    IpAddress::Ipv4(_) => format!("{}:{}", show_ip(*ip), item.port),
                    IpAddress::Ipv6(_) => format!("[{}]:{}", show_ip(*ip), item.port),
                }
                .into();
                connection = Some(connected);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some((socket, (input, output))) = connection else {
        let e = last.map_or("unknown", |e| e.name());
        fail(&mut report, "connect", e.into());
        return report;
    };
    report["connected"] = true.into();
    let mut ok = true;
    if let Some(text) = &item.send {
        for chunk in text.as_bytes().chunks(4096) {
            if let Err(e) = output.blocking_write_and_flush(chunk) {
                fail(&mut report, "send", stream_error(e));
                ok = false;
                break;
            }
        }
        if ok && item.shutdown {
            let _ = socket.shutdown(ShutdownType::Send);
        }
    }
    if ok && (item.send.is_some() || item.read) {
        match receive(&input, item.read_bytes, item.read_ms) {
            Ok(reply) => report["reply"] = String::from_utf8_lossy(&reply).into_owned().into(),
            Err(e) => fail(&mut report, "receive", e),
        }
    }
    // Streams are the socket's children: they go first.
    drop(input);
    drop(output);
    drop(socket);
    report
}
