//! VMs as their hosts' libvirt daemons see them, and live migrations as the controller
//! runs them: what `violind` reports (`POST /v1/hosts/{host}/vms`), what an operator asks
//! for (`POST /v1/migrations`) and what the controller records of each move.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::types::{IfName, Name, UnicastMac};

/// A domain's state, as libvirt names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Other,
}

impl VmState {
    pub const ALL: [VmState; 5] = [
        VmState::Running,
        VmState::Paused,
        VmState::Shutoff,
        VmState::Crashed,
        VmState::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Shutoff => "shutoff",
            VmState::Crashed => "crashed",
            VmState::Other => "other",
        }
    }
}

/// One domain of a host's libvirt daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmStatus {
    /// The domain's name; the controller matches it to the spec's `[[vm]] name`.
    pub name: String,
    pub state: VmState,
    /// CPU time used since the domain started, in seconds.
    pub cpu_seconds: f64,
    /// Memory the domain holds, in bytes.
    pub memory_bytes: u64,
    pub vcpus: u32,
    /// The domain's network interfaces (`<target dev=...>`), its Violin ports.
    #[serde(default)]
    pub ports: Vec<IfName>,
    /// The most memory it may have (its balloon's ceiling), in bytes.
    #[serde(default)]
    pub max_memory_bytes: u64,
    /// Memory the guest uses (its balloon driver's statistics: available less unused),
    /// in bytes; None when the guest reports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Its CPU scheduler weight (cgroup cpu.shares), when libvirt can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// Its CPU cap in cores (vCPU quota over period); None: uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cap: Option<f64>,
}

/// The CPU and memory a host gives one of its VMs, as the adaptation manager decided: a
/// host's share carries those of its VMs, and its violind sets them through libvirt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmResources {
    /// The domain's name (the spec's `[[vm]] name`).
    pub vm: String,
    /// CPU scheduler weight (libvirt's cpu_shares, 2..=262144).
    pub cpu_weight: u64,
    /// CPU cap in cores (libvirt's vcpu_quota over vcpu_period); None: uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cap: Option<f64>,
    /// Balloon target in MiB; None leaves the memory as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

/// A VM's use over time, as the controller keeps it (`GET /v1/usage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmUsage {
    pub vm: String,
    pub host: String,
    pub environment: Option<String>,
    pub samples: Vec<UsageSample>,
}

/// One sample: CPU used since the previous one (cores), and memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageSample {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub cpu_cores: f64,
    pub memory_mib: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cap: Option<f64>,
}

/// A lifecycle change libvirt announced, with the time violind received it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainEvent {
    pub vm: String,
    pub kind: DomainEventKind,
    /// Whether libvirt says the change is part of a migration (e.g. resumed on arrival).
    #[serde(default)]
    pub migration: bool,
    /// Unix time in nanoseconds.
    pub at_ns: u64,
    #[serde(default)]
    pub ports: Vec<IfName>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainEventKind {
    Defined,
    Undefined,
    Started,
    Suspended,
    Resumed,
    Stopped,
    Other,
}

/// What a host's `violind` reports: its domains, and the events since the last report.
/// Events go out the moment they happen, without the domains (`vms` absent: unchanged
/// since the last report), so that a migration switches over without waiting for them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<VmStatus>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<DomainEvent>,
}

/// A VM with the host that reports it, as `violinctl vms` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub host: String,
    /// The environment whose spec names this VM, if any.
    pub environment: Option<String>,
    pub mac: Option<UnicastMac>,
    #[serde(flatten)]
    pub status: VmStatus,
}

/// `POST /v1/migrations`: one VM to a host, or a whole environment to a list of hosts
/// (its VMs, by name, go to them in turn).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Name>,
    pub to: Vec<Name>,
    /// Caps the copy's bandwidth (MiB/s); libvirt's default (unlimited) without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib_s: Option<u64>,
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// The destination is being given the VM's port, policies and forwarding entries.
    Preparing,
    /// libvirt is copying the VM's memory.
    Migrating,
    /// The VM runs on the destination; the hosts are being re-pointed.
    Switching,
    Completed,
    /// Failed, refused or cancelled: everything was rolled back (see `error`).
    Failed,
}

impl MigrationPhase {
    pub fn finished(self) -> bool {
        matches!(self, MigrationPhase::Completed | MigrationPhase::Failed)
    }
}

/// One live migration, as the controller records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Migration {
    pub id: u64,
    pub vm: String,
    pub environment: String,
    pub from: String,
    pub to: String,
    pub phase: MigrationPhase,
    /// Unix time in seconds.
    pub started: f64,
    /// Memory copied so far and in all, as libvirt's job reports it.
    pub data_processed_bytes: u64,
    pub data_total_bytes: u64,
    /// Whole migration, request to completion (seconds).
    pub total_seconds: Option<f64>,
    /// The guest's downtime as libvirt measured it (seconds).
    pub downtime_seconds: Option<f64>,
    /// From the guest's resumption on the destination until every host of its
    /// environment serves the new location (seconds).
    pub reconvergence_seconds: Option<f64>,
    /// Why it failed and what was rolled back.
    pub error: Option<String>,
    /// The move was made with libvirt directly (e.g. `virsh migrate`); the controller
    /// followed it when the VM resumed on its new host.
    #[serde(default)]
    pub followed: bool,
}

impl Migration {
    /// A migration of `vm` (of `environment`) from one host to another, at its start:
    /// nothing copied or timed yet.
    pub fn new(id: u64, vm: &str, environment: &str, from: &str, to: &str, started: f64) -> Self {
        Migration {
            id,
            vm: vm.into(),
            environment: environment.into(),
            from: from.into(),
            to: to.into(),
            phase: MigrationPhase::Preparing,
            started,
            data_processed_bytes: 0,
            data_total_bytes: 0,
            total_seconds: None,
            downtime_seconds: None,
            reconvergence_seconds: None,
            error: None,
            followed: false,
        }
    }
}

/// The migrations a request started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Migrations {
    pub migrations: Vec<Migration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back() {
        let r = VmReport {
            vms: Some(vec![VmStatus {
                name: "a1".into(),
                state: VmState::Running,
                cpu_seconds: 1.5,
                memory_bytes: 128 << 20,
                vcpus: 1,
                ports: vec![IfName::parse("vt1").unwrap()],
                max_memory_bytes: 128 << 20,
                memory_used_bytes: Some(40 << 20),
                cpu_weight: Some(512),
                cpu_cap: Some(0.5),
            }]),
            events: vec![DomainEvent {
                vm: "a1".into(),
                kind: DomainEventKind::Resumed,
                migration: true,
                at_ns: 7,
                ports: vec![],
            }],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"running""#), "{json}");
        assert!(json.contains(r#""kind":"resumed""#), "{json}");
        assert_eq!(serde_json::from_str::<VmReport>(&json).unwrap(), r);
    }
}
