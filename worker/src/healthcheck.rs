//! `shoal-worker healthcheck`: asks a running worker's `/healthz` (or `/readyz`) and exits 0
//! if it answers 200, 1 otherwise. Container images built for small size have no `curl`;
//! the worker binary is already there, so it is its own health probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::Parser;

/// Probe a running worker's HTTP listener.
#[derive(Debug, Parser)]
#[command(name = "shoal-worker healthcheck")]
pub struct Healthcheck {
    /// The worker's listener. An unspecified address (0.0.0.0) is probed on loopback.
    #[arg(long, env = "SHOAL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub addr: SocketAddr,
    /// `/healthz` (alive) or `/readyz` (alive, can reach its queue, not shutting down).
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl Healthcheck {
    /// The HTTP status the worker answered.
    pub fn probe(&self) -> std::io::Result<u16> {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            self.path
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))
    }
}

/// Runs the probe with `args` (after `healthcheck`); the exit code.
pub fn main(args: impl Iterator<Item = String>) -> i32 {
    let check = Healthcheck::parse_from(std::iter::once("healthcheck".to_owned()).chain(args));
    match check.probe() {
        Ok(200) => 0,
        Ok(status) => {
            eprintln!("{} answered {status}", check.path);
            1
        }
        Err(e) => {
            eprintln!("cannot reach the worker at {}: {e}", check.addr);
            1
        }
    }
}
