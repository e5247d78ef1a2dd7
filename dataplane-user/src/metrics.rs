//! Prometheus exposition of the datapath's counters and the host's libvirt domains. Every
//! scrape reads the pinned maps afresh, so the figures are the datapath's own, across
//! daemon restarts.
//!
//! Names follow Prometheus' conventions: a unit before `_total` on counters
//! (`_packets_total`, `_bytes_total`, `_frames_total`), `_entries` on sizes, and one label
//! name per dimension in every metric: `interface`, `vni`, `peer`, `reason`, `map`, `vm`,
//! `kind` (of a bound).
use anyhow::Result;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use violin_api::stats::Stats;

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Counters that share their labels, one value each per labelled row.
fn counters(
    reg: &Registry,
    metrics: &[(&str, &str)],
    labels: &[&str],
) -> Result<Vec<IntCounterVec>> {
    metrics
        .iter()
        .map(|(name, help)| counter(reg, name, help, labels))
        .collect()
}

/// The stats in Prometheus' text format.
pub fn render(stats: &Stats) -> Result<String> {
    let reg = Registry::new();
    gauge(
        &reg,
        "violin_build_info",
        "Always 1; the labels name the violind build",
        &["version", "revision"],
    )?
    .with_label_values(&[violin_api::build::VERSION, violin_api::build::REVISION])
    .set(1);
    ports(&reg, stats)?;
    peers(&reg, stats)?;
    datapath(&reg, stats)?;
    environments(&reg, stats)?;
    maps(&reg, stats)?;
    slow_path(&reg, stats)?;
    vms(&reg, stats)?;
    let mut buf = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut buf)?;
    Ok(String::from_utf8(buf)?)
}

fn ports(reg: &Registry, stats: &Stats) -> Result<()> {
    let metrics = counters(
        reg,
        &[
            (
                "violin_port_rx_packets_total",
                "Frames received from the port's VM (the underlay: from the wire)",
            ),
            (
                "violin_port_rx_bytes_total",
                "Bytes received from the port's VM (the underlay: from the wire)",
            ),
            (
                "violin_port_tx_packets_total",
                "Frames the datapath forwarded to the port",
            ),
            (
                "violin_port_tx_bytes_total",
                "Bytes the datapath forwarded to the port",
            ),
            (
                "violin_port_slow_path_packets_total",
                "Frames from the port handed to broadcast replication",
            ),
            (
                "violin_port_dropped_packets_total",
                "Frames from the port the datapath dropped",
            ),
        ],
        &["interface", "vni"],
    )?;
    for p in &stats.ports {
        let vni = p.vni.map_or(String::new(), |v| v.to_string());
        let l = [p.interface.as_str(), vni.as_str()];
        let s = &p.stats;
        let values = [
            s.rx.packets,
            s.rx.bytes,
            s.tx.packets,
            s.tx.bytes,
            s.to_slow_path.packets,
            s.dropped.packets,
        ];
        for (m, v) in metrics.iter().zip(values) {
            m.with_label_values(&l).inc_by(v);
        }
    }
    Ok(())
}

fn peers(reg: &Registry, stats: &Stats) -> Result<()> {
    let metrics = counters(
        reg,
        &[
            (
                "violin_peer_rx_packets_total",
                "Tunnel packets received from the peer",
            ),
            (
                "violin_peer_rx_bytes_total",
                "Tunnel bytes received from the peer",
            ),
            (
                "violin_peer_tx_packets_total",
                "Tunnel packets sent to the peer",
            ),
            (
                "violin_peer_tx_bytes_total",
                "Tunnel bytes sent to the peer",
            ),
        ],
        &["peer"],
    )?;
    let resolved = gauge(
        reg,
        "violin_peer_resolved",
        "1 when the peer's underlay next hop is known",
        &["peer"],
    )?;
    for p in &stats.peers {
        let addr = p.address.to_string();
        let s = &p.stats;
        for (m, v) in metrics
            .iter()
            .zip([s.rx.packets, s.rx.bytes, s.tx.packets, s.tx.bytes])
        {
            m.with_label_values(&[addr.as_str()]).inc_by(v);
        }
        resolved
            .with_label_values(&[addr.as_str()])
            .set(p.next_hop_mac.is_some() as i64);
    }
    Ok(())
}

/// Drops by reason and the programs' verdicts.
fn datapath(reg: &Registry, stats: &Stats) -> Result<()> {
    let drops = counter(
        reg,
        "violin_datapath_dropped_packets_total",
        "Frames dropped by the datapath, by reason",
        &["reason"],
    )?;
    for (reason, v) in &stats.drops {
        drops.with_label_values(&[reason]).inc_by(*v);
    }
    let actions = counter(
        reg,
        "violin_datapath_packets_total",
        "Frames each datapath program handled, by verdict",
        &["program", "action"],
    )?;
    for (key, v) in &stats.actions {
        if let Some((program, action)) = key.split_once('/') {
            actions.with_label_values(&[program, action]).inc_by(*v);
        }
    }
    Ok(())
}

/// Per environment: forwarding table, traffic its VMs sent, and per VM pair.
fn environments(reg: &Registry, stats: &Stats) -> Result<()> {
    let fdb = gauge(
        reg,
        "violin_fdb_entries",
        "Forwarding table entries, by environment",
        &["vni"],
    )?;
    for e in &stats.fdb {
        fdb.with_label_values(&[e.vni.to_string().as_str()]).inc();
    }
    let changes = counter(
        reg,
        "violin_fdb_changes_total",
        "Changes to the forwarding table, by writer (learned: the datapath's learning \
         writes; placed: violind's flush and placement steps that changed it)",
        &["writer"],
    )?;
    for (by, n) in &stats.fdb_changes {
        changes.with_label_values(&[by]).inc_by(*n);
    }
    let pair = counters(
        reg,
        &[
            (
                "violin_vm_pair_packets_total",
                "Unicast frames one VM sent another (counted on the sender's host)",
            ),
            (
                "violin_vm_pair_bytes_total",
                "Unicast bytes one VM sent another (counted on the sender's host)",
            ),
        ],
        &["vni", "src", "dst"],
    )?;
    for p in &stats.pairs {
        let vni = p.vni.to_string();
        let l = [vni.as_str(), p.src.as_str(), p.dst.as_str()];
        pair[0].with_label_values(&l).inc_by(p.traffic.packets);
        pair[1].with_label_values(&l).inc_by(p.traffic.bytes);
    }
    let bound = gauge(
        reg,
        "violin_bound_bytes_per_second",
        "Traffic bounds in force: a VM pair's (kind pair, src -> dst MACs) or a VM's over \
         what it sends to other hosts (kind vm, src its port)",
        &["kind", "vni", "src", "dst"],
    )?;
    let queue = GaugeVec::new(
        Opts::new(
            "violin_bound_queue_seconds",
            "How long a bulk frame sent now would wait in the bound's queue (the datapath's \
             clock)",
        ),
        &["kind", "vni", "src", "dst"],
    )?;
    reg.register(Box::new(queue.clone()))?;
    for b in &stats.bounds {
        let vni = b.vni.to_string();
        let l = [
            b.kind.as_str(),
            vni.as_str(),
            b.src.as_str(),
            b.dst.as_str(),
        ];
        bound.with_label_values(&l).set(b.bytes_per_second as i64);
        queue.with_label_values(&l).set(b.queue_ns as f64 / 1e9);
    }
    let env = counters(
        reg,
        &[
            (
                "violin_environment_rx_packets_total",
                "Frames the environment's VMs on this host sent",
            ),
            (
                "violin_environment_rx_bytes_total",
                "Bytes the environment's VMs on this host sent",
            ),
        ],
        &["vni"],
    )?;
    for p in &stats.ports {
        if let Some(vni) = p.vni {
            let l = [vni.to_string()];
            env[0].with_label_values(&l).inc_by(p.stats.rx.packets);
            env[1].with_label_values(&l).inc_by(p.stats.rx.bytes);
        }
    }
    Ok(())
}

/// Occupancy beside capacity, so `entries / capacity` is the pressure on each map.
fn maps(reg: &Registry, stats: &Stats) -> Result<()> {
    let entries = gauge(
        reg,
        "violin_map_entries",
        "Entries in each datapath map",
        &["map"],
    )?;
    for (map, n) in &stats.map_entries {
        entries.with_label_values(&[map]).set(*n as i64);
    }
    let capacity = gauge(
        reg,
        "violin_map_capacity_entries",
        "Entries each datapath map can hold",
        &["map"],
    )?;
    for (map, n) in &stats.map_capacity {
        capacity.with_label_values(&[map]).set(*n as i64);
    }
    Ok(())
}

/// The slow path's AF_XDP sockets, per interface and receive queue.
fn slow_path(reg: &Registry, stats: &Stats) -> Result<()> {
    let metrics = counters(
        reg,
        &[
            (
                "violin_slow_path_rx_frames_total",
                "Frames the slow path received on the socket",
            ),
            (
                "violin_slow_path_tx_frames_total",
                "Frames the slow path sent on the socket",
            ),
            (
                "violin_slow_path_tx_unsent_frames_total",
                "Copies not sent: every transmit frame was in flight",
            ),
            (
                "violin_slow_path_dropped_frames_total",
                "Frames the slow path could not replicate",
            ),
            (
                "violin_afxdp_rx_dropped_frames_total",
                "AF_XDP: frames the kernel dropped for the socket",
            ),
            (
                "violin_afxdp_rx_ring_full_frames_total",
                "AF_XDP: frames dropped on a full receive ring",
            ),
            (
                "violin_afxdp_fill_ring_empty_total",
                "AF_XDP: times the fill ring was empty",
            ),
        ],
        &["interface", "queue"],
    )?;
    for x in &stats.slow_path {
        let q = x.queue.to_string();
        let l = [x.interface.as_str(), q.as_str()];
        let values = [
            x.rx,
            x.tx,
            x.tx_no_frame,
            x.dropped,
            x.kernel_rx_dropped,
            x.kernel_rx_ring_full,
            x.kernel_fill_ring_empty,
        ];
        for (m, v) in metrics.iter().zip(values) {
            m.with_label_values(&l).inc_by(v);
        }
    }
    Ok(())
}

/// The host's libvirt domains: state, CPU time and memory per VM.
fn vms(reg: &Registry, stats: &Stats) -> Result<()> {
    if stats.vms.is_empty() {
        return Ok(());
    }
    let cpu = prometheus::CounterVec::new(
        Opts::new(
            "violin_vm_cpu_seconds_total",
            "CPU time the VM's domain used since it started on this host",
        ),
        &["vm"],
    )?;
    reg.register(Box::new(cpu.clone()))?;
    let memory = gauge(
        reg,
        "violin_vm_memory_bytes",
        "Memory the VM's domain holds",
        &["vm"],
    )?;
    let state = gauge(
        reg,
        "violin_vm_state",
        "1 for the VM's current libvirt state, 0 for the others",
        &["vm", "state"],
    )?;
    for v in &stats.vms {
        cpu.with_label_values(&[v.name.as_str()])
            .inc_by(v.cpu_seconds);
        memory
            .with_label_values(&[v.name.as_str()])
            .set(v.memory_bytes as i64);
        for s in violin_api::vm::VmState::ALL {
            state
                .with_label_values(&[v.name.as_str(), s.as_str()])
                .set((s == v.state) as i64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::stats::tests::sample;

    /// Counters end in `_total`, and each dimension has one label name everywhere.
    #[test]
    fn names_follow_the_conventions() {
        let text = super::render(&sample()).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            assert!(name.starts_with("violin_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
        let labels: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| Some(l.split_once('{')?.1.split_once('}')?.0))
            .flat_map(|ls| ls.split(','))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        let known = [
            "interface",
            "vni",
            "peer",
            "reason",
            "program",
            "action",
            "src",
            "dst",
            "map",
            "queue",
            "version",
            "revision",
            "vm",
            "state",
            "kind",
            "writer",
        ];
        assert!(labels.iter().all(|l| known.contains(l)), "{labels:?}");
        assert!(text.contains("violin_fdb_changes_total{writer=\"learned\"} 7"));
        assert!(text.contains("violin_port_rx_packets_total{interface=\"vm1\",vni=\"1000\"} 3"));
        assert!(text.contains("violin_map_capacity_entries{map=\"fdb\"} 65536"));
        assert!(
            text.contains("violin_bound_queue_seconds{dst=\"02:00:00:00:02:01\",kind=\"pair\",src=\"02:00:00:00:01:01\",vni=\"1000\"} 0.0015"),
            "{text}"
        );
        assert!(text.contains("violin_build_info{revision="));
        assert!(
            text.contains("violin_vm_state{state=\"running\",vm=\"a1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("violin_vm_cpu_seconds_total{vm=\"a1\"} 2.5"),
            "{text}"
        );
    }
}
