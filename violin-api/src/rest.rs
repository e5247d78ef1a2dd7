//! Request and response bodies of the controller's `/v1` API and of violind's own API.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::types::{DstMatch, IfName, Name, SrcMatch, Vni};

/// Every rejected request: the message, the field at fault and, for specs, its line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// An environment at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvSummary {
    pub name: Name,
    pub vni: Vni,
    pub hosts: Vec<String>,
    pub vms: usize,
    /// Whether selected connectivity restricts which VM pairs talk.
    pub restricted: bool,
    pub limits: usize,
    pub links: usize,
    pub rules: usize,
}

/// One environment with its stored spec (TOML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvDetail {
    #[serde(flatten)]
    pub summary: EnvSummary,
    pub spec: String,
}

/// The changes between the stored and a desired environment, one per line; a changed
/// host or VM shows each field that differs as `old -> new`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub environment: String,
    pub changes: Vec<String>,
}

/// A committed change: what it did and the generation to wait for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    pub changes: Vec<String>,
    pub generation: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub hosts: [Name; 2],
    /// Only "udp" (VXLAN) is offered.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A rule to add (with exactly one of `edge` and `interface`) or delete (neither needed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub host: Name,
    pub src: SrcMatch,
    pub dst: DstMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<IfName>,
}

/// An overlay link between two hosts of an environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkInfo {
    pub environment: String,
    pub vni: Vni,
    pub hosts: [String; 2],
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = [String; 2])]
    pub addresses: [IpAddr; 2],
    /// False when the environment lists no links and so is a full mesh.
    pub explicit: bool,
    /// Why the link exists.
    pub role: LinkRole,
}

/// Why an overlay link exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LinkRole {
    /// The environment lists no links: every pair of its hosts.
    Mesh,
    /// Listed in the spec or added by the link primitive.
    Listed,
    /// VADAPT's star through the proxy host.
    Star,
    /// A fast-path link between two hosts other than the proxy (VADAPT adds and removes
    /// these).
    FastPath,
}

impl LinkRole {
    /// As the JSON says it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkRole::Mesh => "mesh",
            LinkRole::Listed => "listed",
            LinkRole::Star => "star",
            LinkRole::FastPath => "fast-path",
        }
    }
}

/// A forwarding rule with its priority (VNET's strength of match).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleInfo {
    pub environment: String,
    pub host: String,
    pub src: SrcMatch,
    pub dst: DstMatch,
    /// The name of the VM whose MAC `src` matches (or excludes), when one has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_vm: Option<String>,
    /// The name of the VM whose MAC `dst` matches (or excludes), when one has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_vm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<IfName>,
    /// (not default, summed strength, destination strength): higher wins.
    pub priority: [u8; 3],
    /// The default rule (`dst = "none"`).
    pub default: bool,
}

/// Narrows a listing to an environment and/or a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// The source VM: its name in the spec, or its MAC.
    pub src: String,
    /// The destination: a VM's name, or any MAC.
    pub dst: String,
    /// The environment, when the source is in several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// One host on a frame's path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Hop {
    pub host: String,
    /// The rule that decided, or "learned".
    pub decision: String,
    /// Where the frame goes from here.
    pub action: String,
}

/// The path a frame takes, host by host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Route {
    pub environment: String,
    pub src: String,
    pub dst: String,
    pub hops: Vec<Hop>,
    pub delivered: bool,
    pub outcome: String,
}

/// The configuration-time bound: as set, and as measured (the longest recent sync).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Bound {
    pub bound_seconds: Option<f64>,
    pub measured_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundRequest {
    /// In (0, 3600].
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// The generation to report on; the current one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Seconds to wait (at most 30) for every host to apply it before answering: the
    /// answer comes as soon as none is pending, or when the time is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
}

/// How far each registered host has come towards a generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    pub generation: u64,
    pub current: u64,
    pub hosts: Vec<HostSync>,
    /// Hosts that have not applied `generation` yet.
    pub pending: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostSync {
    pub name: String,
    pub connected: bool,
    pub acked: u64,
    pub latency_seconds: Option<f64>,
    pub error: Option<String>,
}

/// A host named by an environment or registered, with its sync state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub name: String,
    pub address: Option<String>,
    /// The daemon's own API (`host:port`) as the host registered it, when it serves one:
    /// where `violinctl observe` finds the daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    pub environments: Vec<String>,
    pub vms: u64,
    pub registered: bool,
    pub connected: bool,
    pub acked_generation: u64,
    pub in_sync: bool,
    pub sync_latency_seconds: Option<f64>,
    pub error: Option<String>,
}

impl HostInfo {
    /// The host's sync state in words, as `violinctl hosts` shows it.
    pub fn sync_state(&self) -> String {
        if let Some(e) = &self.error {
            format!("error: {e}")
        } else if self.in_sync {
            format!("in sync (generation {})", self.acked_generation)
        } else if self.connected {
            format!("behind (generation {})", self.acked_generation)
        } else if self.registered {
            "disconnected".into()
        } else {
            "not registered".into()
        }
    }
}

/// violind's `GET /v1/links`: its peers and the environments whose frames use each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonLinks {
    pub generation: u64,
    pub links: Vec<DaemonLink>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonLink {
    #[schema(value_type = String)]
    pub peer: IpAddr,
    #[serde(rename = "type")]
    pub kind: String,
    pub vnis: Vec<Vni>,
}

/// violind's `GET /v1/rules`: the forwarding rules it serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DaemonRules {
    pub generation: u64,
    pub rules: Vec<DaemonRule>,
}

/// One rule a daemon serves: the share's rule with the environment it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DaemonRule {
    pub environment: Name,
    pub vni: Vni,
    #[serde(flatten)]
    pub rule: crate::share::ForwardRule,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_rule_reads_back_flat() {
        let r = DaemonRule {
            environment: Name::parse("blue").unwrap(),
            vni: Vni::new(7).unwrap(),
            rule: crate::share::ForwardRule {
                src: SrcMatch::parse("any").unwrap(),
                dst: DstMatch::parse("none").unwrap(),
                edge: Some([10, 0, 0, 2].into()),
                interface: None,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"environment":"blue","vni":7,"src":"any","dst":"none","edge":"10.0.0.2"}"#
        );
        assert_eq!(serde_json::from_str::<DaemonRule>(&json).unwrap(), r);
    }
}

/// `GET /v1/environments/{name}/topology`: with `after`, wait for a newer declaration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopologyQuery {
    /// Answer once more than this many changes were declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// How long to wait for that, seconds (0 to 60; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
}

/// An environment's application topology as VTTIF infers it from the hosts' traffic
/// reports (`GET /v1/environments/{name}/topology`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppTopology {
    pub environment: String,
    /// The window the traffic matrix is aggregated over, ms.
    pub smoothing_ms: u64,
    /// The fraction of the busiest pair's traffic a pair needs to be an edge.
    pub threshold: f64,
    /// How long a new topology must hold before it is declared, ms.
    pub settle_ms: u64,
    /// Topology changes declared since the controller started.
    pub changes: u64,
    /// The declared topology's edges, busiest first.
    pub edges: Vec<TopologyEdge>,
    /// The traffic matrix over the window: every pair that sent anything.
    pub matrix: Vec<TopologyEdge>,
}

/// A directed pair: its VMs (by name; a MAC the spec does not name as itself), its
/// traffic over the window, and its intensity relative to the busiest pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopologyEdge {
    pub src: String,
    pub dst: String,
    pub bytes_per_second: f64,
    pub intensity: f64,
}

/// One step of a VADAPT adaptation: a fast-path link added or removed, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdaptStep {
    /// `add` or `remove`.
    pub action: String,
    pub hosts: [String; 2],
    /// What the inferred topology's VM pairs between the two hosts send, bytes/s (both
    /// ways, over VTTIF's window).
    pub bytes_per_second: f64,
    /// Those pairs, as `src->dst`, busiest first.
    pub pairs: Vec<String>,
    pub reason: String,
}

/// What VADAPT would do to an environment's overlay now
/// (`GET /v1/environments/{name}/adapt`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdaptPlan {
    pub environment: String,
    /// The star's centre.
    pub proxy: String,
    /// Fast-path links at most (none: one per pair of hosts).
    pub budget: Option<u32>,
    pub auto: bool,
    /// The fast-path links the overlay has now.
    pub fast_paths: Vec<[String; 2]>,
    /// The host pairs the inferred topology asks for, busiest first (pairs with the proxy
    /// need no fast path: the star links them already).
    pub demand: Vec<AdaptStep>,
    /// The changes, empty when the overlay fits the topology.
    pub steps: Vec<AdaptStep>,
    /// VADAPT's greedy mapping of VMs onto hosts: the live migrations it calls for.
    pub moves: Vec<VmMove>,
    /// Why the mapping calls for these moves, or for none.
    pub mapping: String,
}

/// A VM VADAPT's mapping puts on another host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmMove {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// An adaptation VADAPT made, with its measured effect
/// (`POST /v1/environments/{name}/adapt`, `GET /v1/adaptations`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Adaptation {
    pub id: u64,
    pub environment: String,
    /// `manual` (asked for) or `auto`.
    pub trigger: String,
    pub at_unix_ms: u64,
    pub steps: Vec<AdaptStep>,
    /// The spec changes it made; none when the overlay already fit.
    pub changes: Vec<String>,
    /// The VMs it moved (or tried to): the mapping's migrations.
    #[serde(default)]
    pub moves: Vec<VmMove>,
    /// The migrations it started (follow them with `violinctl migrations`).
    #[serde(default)]
    pub migrations: Vec<u64>,
    /// Moves the migration supervisor refused, with its reason.
    #[serde(default)]
    pub refused: Vec<String>,
    /// The generation that carries it, when it changed anything.
    pub generation: Option<u64>,
    /// From the decision until every host of the environment forwarded by the new
    /// overlay (acknowledged its generation), ms.
    pub reconfigure_ms: Option<f64>,
    /// The environment's traffic over VTTIF's window before the change, bytes/s.
    pub traffic_before: f64,
    /// The same, one window after every host applied the change.
    pub traffic_after: Option<f64>,
}

/// One cell of the host matrix (`GET /v1/measurements`): what `from` measured to `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeasuredPair {
    pub from: String,
    /// The host with that underlay address (the address itself when none is registered).
    pub to: String,
    pub rtt_us: Option<f64>,
    pub bandwidth_bytes_per_second: Option<f64>,
    pub passive_bytes_per_second: Option<f64>,
    pub probes_lost: u32,
    /// Seconds since `from` reported it.
    pub age_seconds: f64,
}

/// The adaptation manager's settings (Ruth 2007, chapter 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerParams {
    /// Samples the weighted moving average spans (equation 6.1).
    pub window: usize,
    /// Over-allocation below full use: a VM is given what brings its use to 1/alpha of it
    /// (equation 6.2; 4/3 keeps VMs 75% used).
    pub alpha: f64,
    /// Over-allocation of a fully used VM (equation 6.3).
    pub beta: f64,
    /// The least CPU (cores) and memory (MiB) a VM is ever given.
    pub min_cpu: f64,
    pub min_memory_mib: f64,
    /// A migration must improve the balance by at least this share of it.
    pub min_gain: f64,
    /// Migrations per decision at most.
    pub max_migrations: usize,
    /// Whether the manager may migrate (else it only sets CPU shares and balloons).
    pub migrate: bool,
}

impl Default for ManagerParams {
    fn default() -> Self {
        ManagerParams {
            window: 5,
            alpha: 4.0 / 3.0,
            beta: 2.0,
            min_cpu: 0.05,
            min_memory_mib: 64.0,
            min_gain: 0.05,
            max_migrations: 8,
            migrate: true,
        }
    }
}

impl ManagerParams {
    /// Checks the settings; the error names the field (as in `window: ...`).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.window) {
            return Err(format!("window: {} is outside 1..=100", self.window));
        }
        if !(self.alpha.is_finite() && self.alpha > 1.0 && self.alpha <= 10.0) {
            return Err(format!("alpha: {} is outside (1, 10]", self.alpha));
        }
        if !(self.beta.is_finite() && self.beta >= self.alpha && self.beta <= 10.0) {
            return Err(format!(
                "beta: {} is outside [alpha, 10] (a saturated VM is given at least what a 1/alpha-used one is)",
                self.beta
            ));
        }
        if !(self.min_cpu.is_finite() && self.min_cpu > 0.0 && self.min_cpu <= 1.0) {
            return Err(format!("min_cpu: {} is outside (0, 1]", self.min_cpu));
        }
        if !(self.min_memory_mib.is_finite() && self.min_memory_mib >= 16.0) {
            return Err(format!(
                "min_memory_mib: {} is below 16",
                self.min_memory_mib
            ));
        }
        if !(0.0..1.0).contains(&self.min_gain) {
            return Err(format!("min_gain: {} is outside [0, 1)", self.min_gain));
        }
        if self.max_migrations > 1000 {
            return Err(format!(
                "max_migrations: {} is above 1000",
                self.max_migrations
            ));
        }
        Ok(())
    }
}

/// What the adaptation manager decides: every VM's level and CPU share, the environments
/// it moves between domains and the VMs it moves between hosts, with its reasons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagerDecision {
    /// Total desired CPU over total capacity (equation 6.5).
    pub target_utilisation: f64,
    /// Equation 6.7 before and after the environments' moves.
    pub balance_before: f64,
    pub balance_after: f64,
    pub domains: Vec<DomainLoad>,
    pub vms: Vec<VmLevel>,
    pub environment_moves: Vec<EnvironmentMove>,
    /// Every live migration, environments' and single VMs'.
    pub moves: Vec<ManagedMove>,
    pub explain: Vec<String>,
}

/// A domain's capacity (cores) and utilisation (equation 6.6) before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainLoad {
    pub name: String,
    pub capacity: f64,
    pub utilisation_before: f64,
    pub utilisation_after: f64,
}

/// A VM's predicted use, desired level and the share it is given, in cores and MiB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmLevel {
    pub environment: String,
    pub vm: String,
    /// Where it runs after the decision's moves.
    pub host: String,
    /// None without samples yet.
    pub predicted_cpu: Option<f64>,
    pub desired_cpu: f64,
    /// The CPU it may use: its desire, scaled down when its host is short.
    pub cpu_cap: f64,
    /// Its scheduler weight, proportional to its desire (libvirt's cpu_shares).
    pub cpu_weight: u64,
    /// Its balloon target.
    pub memory_mib: f64,
}

/// Algorithm 1's step: an environment (its VMs but the head nodes) to another domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentMove {
    pub environment: String,
    pub from: String,
    pub to: String,
    pub vms: usize,
    pub balance_before: f64,
    pub balance_after: f64,
    pub reason: String,
}

/// A live migration the adaptation manager calls for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagedMove {
    pub environment: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// A decision of the adaptation manager and what came of it (`POST /v1/manager`,
/// `GET /v1/manager/log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagerRecord {
    pub id: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// manual or auto.
    pub trigger: String,
    pub decision: ManagerDecision,
    /// The migrations started for its moves.
    pub migrations: Vec<u64>,
    /// The CPU weights, caps and balloon targets the hosts were given (rounded, so that
    /// noise does not reach the hosts).
    pub resources: Vec<crate::vm::VmResources>,
    /// The generation that carries its CPU and memory settings to the hosts, when they
    /// changed.
    pub generation: Option<u64>,
    /// Moves the migration supervisor refused, with why.
    pub errors: Vec<String>,
}

/// What VioCluster's brokers agree on in one round (Ruth 2007, 5.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trade {
    /// `owner` lends `count` machines to `borrower`.
    Lend {
        owner: String,
        borrower: String,
        count: usize,
    },
    /// `borrower` gives back `count` idle machines it no longer needs.
    Return {
        owner: String,
        borrower: String,
        count: usize,
    },
    /// `owner` takes `count` machines back; jobs on them are requeued.
    Reclaim {
        owner: String,
        borrower: String,
        count: usize,
    },
}

impl Trade {
    /// The same trade, of `count` machines (what a lender could actually give or take).
    pub fn with_count(&self, count: usize) -> Trade {
        let mut t = self.clone();
        match &mut t {
            Trade::Lend { count: c, .. }
            | Trade::Return { count: c, .. }
            | Trade::Reclaim { count: c, .. } => *c = count,
        }
        t
    }

    /// Machines it moves.
    pub fn count(&self) -> usize {
        match self {
            Trade::Lend { count, .. }
            | Trade::Return { count, .. }
            | Trade::Reclaim { count, .. } => *count,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trade::Lend { .. } => "lend",
            Trade::Return { .. } => "return",
            Trade::Reclaim { .. } => "reclaim",
        }
    }
}

/// A machine one domain lends another: the borrower's VM `vm` runs on the owner's host
/// `host`, whose own node `node` the owner's scheduler keeps drained meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Loan {
    pub vm: String,
    pub owner: String,
    pub borrower: String,
    pub host: String,
    pub node: String,
    /// Unix time in milliseconds.
    pub since_ms: u64,
    /// The loan added `host` to the borrower's environment (it leaves with the VM).
    #[serde(default)]
    pub added_host: bool,
}

/// A domain as its broker last read it from its scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerDomain {
    pub name: String,
    /// Its virtual cluster.
    pub environment: String,
    /// Its own compute nodes that answer, |P|.
    pub physical: usize,
    /// Its own nodes running its jobs.
    pub busy: usize,
    /// Nodes its queued and running jobs need, d.
    pub demand: usize,
    pub lent: usize,
    pub borrowed: usize,
    /// Borrowed machines running none of its jobs.
    pub idle_borrowed: usize,
    /// n = d - ((|P| - |L|) + |V|): positive, machines it needs; negative, spare.
    pub need: i64,
    /// Why its scheduler could not be read (then the round made no trade).
    pub error: Option<String>,
}

/// One brokering round: what the brokers agreed, what was carried out, what failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerRound {
    pub id: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// manual or auto.
    pub trigger: String,
    pub domains: Vec<BrokerDomain>,
    /// The trades as agreed.
    pub agreed: Vec<Trade>,
    /// The trades as carried out (a lender may have had fewer idle machines).
    pub done: Vec<Trade>,
    pub errors: Vec<String>,
}

/// VioCluster's state (`GET /v1/brokers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Brokers {
    /// Seconds between automatic rounds.
    pub period_s: u64,
    pub loans: Vec<Loan>,
    /// The latest rounds, oldest first.
    pub rounds: Vec<BrokerRound>,
}

/// What a credential may do: `admin` everything; `read_only` read; `host` register,
/// follow its own share and report as the one host it is named after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    ReadOnly,
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read_only",
            Role::Host => "host",
        }
    }
}

/// A credential to issue (`POST /v1/credentials`); a host's is named after the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    #[schema(value_type = String)]
    pub name: Name,
    pub role: Role,
}

/// A credential as the controller keeps it (its token only as a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Credential {
    pub name: String,
    pub role: Role,
    /// Unix time in milliseconds.
    pub created_ms: u64,
    /// Who issued it.
    pub created_by: String,
}

/// A credential just issued, with its token: shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedCredential {
    pub credential: Credential,
    pub token: String,
}

/// A change made through the API, or refused for want of a right (`GET /v1/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The credential's name (`admin`: the controller's own token).
    pub who: String,
    pub role: Role,
    pub method: String,
    pub path: String,
    /// The answer's HTTP status (403: refused for want of a right).
    pub status: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The latest this many entries (default 100).
    pub last: Option<usize>,
}

/// `GET /v1/status`: the whole installation on one screen, and what needs attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// The controller replica that answers, and its store.
    pub controller: Health,
    pub hosts: Vec<HostInfo>,
    pub environments: Vec<EnvSummary>,
    /// Frames the hosts' datapaths dropped over the last `window_seconds`, by host and
    /// reason (reasons with none left out).
    pub drops: Vec<HostDrops>,
    /// How full each host's maps are.
    pub maps: Vec<MapFill>,
    /// Migrations under way.
    pub migrations: Vec<crate::vm::Migration>,
    /// What an operator should look at, each with what to do next; empty when all is well.
    pub attention: Vec<String>,
    pub window_seconds: u64,
}

/// One host's drops over the status window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostDrops {
    pub host: String,
    pub reason: String,
    pub frames: u64,
}

/// One map of one host: its entries against its capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MapFill {
    pub host: String,
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
}

/// `GET /healthz` of the controller and of violind, open to all (load balancers,
/// systemd, Prometheus' blackbox prober): 200 when the process can do its job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// ok, or what is wrong.
    pub status: String,
    /// The controller's state generation, or the one violind last applied.
    pub generation: u64,
    /// The version and git revision.
    pub version: String,
    /// The controller's replica: its role, the leader, its store (absent from violind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaHealth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaHealth {
    /// `only` (the embedded store), `leader` or `follower`.
    pub role: String,
    /// The leader's URL, as the election shows it (followers and the leader).
    pub leader: Option<String>,
    /// `redb` or `etcd`.
    pub store: String,
}
