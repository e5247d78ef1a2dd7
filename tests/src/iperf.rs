//! Throughput between two namespaces with iperf3, and what it cost the sender's TCP:
//! the goodput the receiver saw, the segments the sender's namespace sent and
//! retransmitted (its own /proc/net/snmp), and a ping's round trips alongside.
use std::{
    net::IpAddr,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::sys::{ns_command, ns_run};

/// A server process in a namespace; killed if dropped before it finished.
pub struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// Starts a server in `ns` and gives it a moment to listen.
    pub fn start(ns: &str, program: &str, args: &[&str]) -> Result<Server> {
        let child = ns_command(ns, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program} in {ns}"))?;
        thread::sleep(Duration::from_millis(300));
        Ok(Server(Some(child)))
    }

    /// Waits for the server to exit by itself and returns its standard output.
    pub fn finish(mut self) -> Result<String> {
        let out = self.0.take().expect("running").wait_with_output()?;
        if !out.status.success() {
            bail!("server failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What one iperf3 run achieved.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Goodput the receiver saw.
    pub mbit_per_s: f64,
    /// TCP segments the sender's namespace sent, and of those retransmitted (TCP only).
    pub segments: u64,
    pub retransmitted: u64,
    /// Datagrams lost, in percent (UDP only).
    pub lost_percent: f64,
    /// The sender's rate in each second of the run.
    pub intervals: Vec<f64>,
}

impl Run {
    /// Retransmitted segments as a fraction of those sent.
    pub fn retransmit_ratio(&self) -> f64 {
        if self.segments == 0 {
            0.0
        } else {
            self.retransmitted as f64 / self.segments as f64
        }
    }
}

/// The sender side of a test, TCP or UDP.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// TCP with this many parallel streams.
    Tcp { streams: u32 },
    /// UDP at this offered rate, in datagrams of `len` bytes.
    Udp { mbit: f64, len: u32 },
}

/// (OutSegs, RetransSegs) of the TCP stack of namespace `ns`.
fn tcp_segments(ns: &str) -> Result<(u64, u64)> {
    let snmp = ns_run(ns, "cat", &["/proc/net/snmp"])?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().context("no Tcp: header in /proc/net/snmp")?,
        tcp.next().context("no Tcp: values in /proc/net/snmp")?,
    );
    let field = |name: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no {name} in /proc/net/snmp"))?;
        values
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad {name} in /proc/net/snmp"))
    };
    Ok((field("OutSegs")?, field("RetransSegs")?))
}

/// Runs `load` from namespace `from` to `to_ip` (a server in namespace `to`) for `secs`.
pub fn run(
    from: &str,
    to: &str,
    to_ip: impl Into<IpAddr>,
    load: Load,
    secs: f64,
    port: u16,
) -> Result<Run> {
    let port_s = port.to_string();
    let server = Server::start(to, "iperf3", &["-s", "-1", "-p", &port_s])?;
    let ip = to_ip.into().to_string();
    let secs_s = format!("{secs}");
    let mut args = vec!["-c", &ip, "-p", &port_s, "-t", &secs_s, "-J"];
    let (streams, rate, len);
    match load {
        Load::Tcp { streams: n } => {
            streams = n.to_string();
            args.extend(["-P", &streams]);
        }
        Load::Udp { mbit, len: l } => {
            rate = format!("{mbit}M");
            len = l.to_string();
            args.extend(["-u", "-b", &rate, "-l", &len]);
        }
    }
    let before = tcp_segments(from)?;
    let out = ns_run(from, "iperf3", &args)?;
    let after = tcp_segments(from)?;
    drop(server);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).with_context(|| format!("iperf3 said: {out}"))?;
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|x| x.as_f64())
        .context("iperf3 reported no received rate")?;
    let intervals = v
        .pointer("/intervals")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.pointer("/sum/bits_per_second")?.as_f64())
                .map(|b| b / 1e6)
                .collect()
        })
        .unwrap_or_default();
    let mut run = Run {
        mbit_per_s: bps / 1e6,
        intervals,
        ..Run::default()
    };
    match load {
        Load::Tcp { .. } => {
            run.segments = after.0.saturating_sub(before.0);
            run.retransmitted = after.1.saturating_sub(before.1);
        }
        Load::Udp { .. } => {
            run.lost_percent = v
                .pointer("/end/sum_received/lost_percent")
                .and_then(|x| x.as_f64())
                .unwrap_or(0.0);
        }
    }
    Ok(run)
}

/// Round-trip times in milliseconds of `count` pings from `ns` to `target`, one every
/// `interval` seconds (replies only).
pub fn ping_rtts(ns: &str, target: &str, count: u32, interval: f64) -> Result<Vec<f64>> {
    let out = ns_command(
        ns,
        "ping",
        &[
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            &format!("{interval}"),
            "-W",
            "2",
            target,
        ],
    )
    .output()
    .context("running ping")?;
    Ok(parse_rtts(&String::from_utf8_lossy(&out.stdout)))
}

/// The `time=X ms` of each reply line.
pub fn parse_rtts(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The `q` quantile (0..=1) of `samples`, by nearest rank; None when empty.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtts_are_read_from_reply_lines_only() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.512 ms\n\
                   64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=12.0 ms\n\
                   \n--- 10.0.0.2 ping statistics ---\n\
                   rtt min/avg/max/mdev = 0.512/6.256/12.000/5.744 ms\n";
        assert_eq!(parse_rtts(out), vec![0.512, 12.0]);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
