//! Prometheus exposition of the datapath's counters. Every scrape reads the pinned maps
//! afresh, so the figures are the datapath's own, across daemon restarts.
use anyhow::Result;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::stats::Snapshot;

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

/// The snapshot in Prometheus' text format.
pub fn render(snap: &Snapshot) -> Result<String> {
    let reg = Registry::new();
    let port_labels = ["port", "vni"];
    let port_metrics = [
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
    ];
    let mut pm = Vec::new();
    for (name, help) in port_metrics {
        pm.push(counter(&reg, name, help, &port_labels)?);
    }
    for p in &snap.ports {
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
        for (m, v) in pm.iter().zip(values) {
            m.with_label_values(&l).inc_by(v);
        }
    }
    let peer_metrics = [
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
    ];
    let mut pe = Vec::new();
    for (name, help) in peer_metrics {
        pe.push(counter(&reg, name, help, &["peer"])?);
    }
    let resolved = gauge(
        &reg,
        "violin_peer_resolved",
        "1 when the peer's underlay next hop is known",
        &["peer"],
    )?;
    for p in &snap.peers {
        let addr = p.address.to_string();
        let s = &p.stats;
        for (m, v) in pe
            .iter()
            .zip([s.rx.packets, s.rx.bytes, s.tx.packets, s.tx.bytes])
        {
            m.with_label_values(&[addr.as_str()]).inc_by(v);
        }
        resolved
            .with_label_values(&[addr.as_str()])
            .set(p.next_hop_mac.is_some() as i64);
    }
    let drops = counter(
        &reg,
        "violin_drops_total",
        "Frames dropped by the datapath, by reason",
        &["reason"],
    )?;
    for (reason, v) in &snap.drops {
        drops.with_label_values(&[reason]).inc_by(*v);
    }
    let actions = counter(
        &reg,
        "violin_datapath_actions_total",
        "Verdicts of the datapath programs",
        &["program", "action"],
    )?;
    for (key, v) in &snap.actions {
        if let Some((program, action)) = key.split_once('/') {
            actions.with_label_values(&[program, action]).inc_by(*v);
        }
    }
    let fdb = gauge(
        &reg,
        "violin_fdb_entries",
        "Forwarding table entries, by environment",
        &["vni"],
    )?;
    for e in &snap.fdb {
        fdb.with_label_values(&[e.vni.to_string().as_str()]).inc();
    }
    let pair_packets = counter(
        &reg,
        "violin_vm_pair_packets_total",
        "Unicast frames one VM sent another (counted on the sender's host)",
        &["vni", "src", "dst"],
    )?;
    let pair_bytes = counter(
        &reg,
        "violin_vm_pair_bytes_total",
        "Unicast bytes one VM sent another (counted on the sender's host)",
        &["vni", "src", "dst"],
    )?;
    for p in &snap.pairs {
        let vni = p.vni.to_string();
        let l = [vni.as_str(), p.src.as_str(), p.dst.as_str()];
        pair_packets.with_label_values(&l).inc_by(p.traffic.packets);
        pair_bytes.with_label_values(&l).inc_by(p.traffic.bytes);
    }
    let env_packets = counter(
        &reg,
        "violin_environment_rx_packets_total",
        "Frames the environment's VMs on this host sent",
        &["vni"],
    )?;
    let env_bytes = counter(
        &reg,
        "violin_environment_rx_bytes_total",
        "Bytes the environment's VMs on this host sent",
        &["vni"],
    )?;
    for p in &snap.ports {
        if let Some(vni) = p.vni {
            let v = vni.to_string();
            env_packets
                .with_label_values(&[v.as_str()])
                .inc_by(p.stats.rx.packets);
            env_bytes
                .with_label_values(&[v.as_str()])
                .inc_by(p.stats.rx.bytes);
        }
    }
    let occupancy = gauge(
        &reg,
        "violin_map_entries",
        "Entries in each datapath map",
        &["map"],
    )?;
    for (map, n) in &snap.map_entries {
        occupancy.with_label_values(&[map]).set(*n as i64);
    }
    let xsk_metrics = [
        (
            "violin_slow_path_rx_frames_total",
            "Frames the slow path received on the socket",
        ),
        (
            "violin_slow_path_tx_frames_total",
            "Frames the slow path sent on the socket",
        ),
        (
            "violin_slow_path_tx_no_frame_total",
            "Copies not sent: every transmit frame was in flight",
        ),
        (
            "violin_slow_path_dropped_total",
            "Frames the slow path could not replicate",
        ),
        (
            "violin_afxdp_rx_dropped_total",
            "AF_XDP: frames the kernel dropped for the socket",
        ),
        (
            "violin_afxdp_rx_ring_full_total",
            "AF_XDP: frames dropped on a full receive ring",
        ),
        (
            "violin_afxdp_fill_ring_empty_total",
            "AF_XDP: times the fill ring was empty",
        ),
    ];
    let mut xm = Vec::new();
    for (name, help) in xsk_metrics {
        xm.push(counter(&reg, name, help, &["interface", "queue"])?);
    }
    for x in &snap.slow_path {
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
        for (m, v) in xm.iter().zip(values) {
            m.with_label_values(&l).inc_by(v);
        }
    }
    let mut buf = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut buf)?;
    Ok(String::from_utf8(buf)?)
}
