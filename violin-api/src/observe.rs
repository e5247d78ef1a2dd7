//! Live events from a host's datapath (`GET /v1/observe` on violind, `violinctl
//! observe`): every frame the datapath drops while someone observes, and a sample of the
//! frames it forwards from VM ports (each CPU bounded to a rate), one JSON object per
//! line.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One frame and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowEvent {
    /// When the datapath saw it, seconds since the Unix epoch.
    pub time: f64,
    pub host: String,
    /// The port it came in on (the underlay's interface for frames from other hosts).
    pub port: String,
    /// The port's environment, when it is a VM port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `dropped` or `forwarded`.
    pub verdict: String,
    /// The drop reason, as `violind stats` counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub src_mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_vm: Option<String>,
    pub dst_mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_vm: Option<String>,
    /// The EtherType, e.g. `0x0800`.
    pub ethertype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub src_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub dst_ip: Option<Ipv4Addr>,
    /// `tcp`, `udp`, `icmp` or the IP protocol's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// Bytes.
    pub len: u32,
}

/// Which events an observer wants; every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObserveQuery {
    /// Only dropped frames.
    #[serde(default)]
    pub drops: bool,
    /// Only frames from or to this VM (its name or MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Only this environment's (its name or VNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Only drops for this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Describe one forwarded frame in this many (at random) [default: 100]; with
    /// `drops`, none are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u32>,
}

/// One forwarded frame in this many is described when an observer names no rate.
pub const DEFAULT_EVERY: u32 = 100;

impl ObserveQuery {
    pub fn matches(&self, e: &FlowEvent) -> bool {
        let vm = |v: &str| {
            [&e.src_vm, &e.dst_vm]
                .iter()
                .any(|n| n.as_deref() == Some(v))
                || e.src_mac.eq_ignore_ascii_case(v)
                || e.dst_mac.eq_ignore_ascii_case(v)
        };
        let env = |v: &str| {
            e.environment.as_deref() == Some(v) || e.vni.is_some_and(|n| n.to_string() == v)
        };
        (!self.drops || e.verdict == "dropped")
            && self.vm.as_deref().is_none_or(vm)
            && self.env.as_deref().is_none_or(env)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| e.reason.as_deref() == Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_names_macs_vnis_and_reasons() {
        let e = FlowEvent {
            time: 1.5,
            host: "h1".into(),
            port: "vm1".into(),
            vni: Some(1000),
            environment: Some("blue".into()),
            verdict: "dropped".into(),
            reason: Some("spoofed_ip".into()),
            src_mac: "02:00:00:00:01:01".into(),
            src_vm: Some("a1".into()),
            dst_mac: "02:00:00:00:02:01".into(),
            dst_vm: None,
            ethertype: "0x0800".into(),
            src_ip: Some(Ipv4Addr::new(10, 200, 9, 99)),
            dst_ip: None,
            proto: Some("icmp".into()),
            src_port: None,
            dst_port: None,
            len: 98,
        };
        let q = |f: fn(&mut ObserveQuery)| {
            let mut q = ObserveQuery::default();
            f(&mut q);
            q.matches(&e)
        };
        assert!(q(|_| {}));
        assert!(q(|q| q.drops = true));
        assert!(q(|q| q.vm = Some("a1".into())));
        assert!(q(|q| q.vm = Some("02:00:00:00:02:01".into())));
        assert!(!q(|q| q.vm = Some("b1".into())));
        assert!(q(|q| q.env = Some("1000".into())));
        assert!(q(|q| q.env = Some("blue".into())));
        assert!(!q(|q| q.env = Some("red".into())));
        assert!(q(|q| q.reason = Some("spoofed_ip".into())));
        assert!(!q(|q| q.reason = Some("storm".into())));
    }
}
