//! The controller's own metrics (`/metrics`): its build, sync latency and errors per host,
//! hosts connected, the generation and each host's acknowledged one, API requests, live
//! migrations (results, in flight, duration, downtime, reconvergence), VTTIF's topologies and
//! VADAPT's adaptations. Names
//! follow Prometheus' conventions (see dataplane-user's metrics.rs); `host` is the host's
//! name everywhere.
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub latency: Histogram,
    pub errors: IntCounterVec,
    pub connected: IntGauge,
    pub registered: IntGauge,
    /// 1 while this replica leads (always, for the only replica).
    pub leader: IntGauge,
    pub generation: IntGauge,
    pub acked: IntGaugeVec,
    pub over_bound: IntCounterVec,
    pub requests: IntCounterVec,
    pub migrations: IntCounterVec,
    pub migrations_in_flight: IntGauge,
    pub migration_duration: Histogram,
    pub migration_downtime: Histogram,
    pub migration_reconvergence: Histogram,
    pub topology_edges: IntGaugeVec,
    pub topology_changes: IntCounterVec,
    pub traffic_refused: IntCounterVec,
    pub host_rtt: GaugeVec,
    pub host_bandwidth: GaugeVec,
    pub host_passive: GaugeVec,
    pub fast_paths: IntGaugeVec,
    pub adaptations: IntCounterVec,
    pub adapt_reconfigure: Histogram,
    pub domain_utilisation: GaugeVec,
    pub vm_cpu: GaugeVec,
    pub manager_decisions: IntCounterVec,
    pub broker_demand: IntGaugeVec,
    pub broker_machines: IntGaugeVec,
    pub broker_trades: IntCounterVec,
}

fn histogram(name: &str, help: &str, start: f64, count: usize) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .buckets(prometheus::exponential_buckets(start, 2.0, count).expect("buckets")),
    )
    .expect("metric")
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "violin_build_info",
                "Always 1; the labels name the controller's build",
            ),
            &["version", "revision"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[violin_api::build::VERSION, violin_api::build::REVISION])
            .set(1);
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "violin_controller_sync_latency_seconds",
                "Time from committing a change to a host acknowledging it",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
        )
        .expect("metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "violin_controller_sync_errors_total",
                "Failed syncs by host and kind (apply: the host could not apply its share)",
            ),
            &["host", "kind"],
        )
        .expect("metric");
        let connected = IntGauge::new(
            "violin_controller_hosts_connected",
            "Hosts with an open sync stream",
        )
        .expect("metric");
        let registered = IntGauge::new(
            "violin_controller_hosts_registered",
            "Hosts that have registered with the controller (kept in its state store)",
        )
        .expect("metric");
        let leader = IntGauge::new(
            "violin_controller_leader",
            "1 while this controller replica leads (writes, sync streams), 0 while it follows",
        )
        .expect("metric");
        let generation = IntGauge::new(
            "violin_controller_generation",
            "Changes committed to the state store",
        )
        .expect("metric");
        let acked = IntGaugeVec::new(
            Opts::new(
                "violin_controller_host_acked_generation",
                "The last generation each host applied",
            ),
            &["host"],
        )
        .expect("metric");
        let over_bound = IntCounterVec::new(
            Opts::new(
                "violin_controller_sync_over_bound_total",
                "Syncs that took longer than the configuration-time bound",
            ),
            &["host"],
        )
        .expect("metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "violin_controller_requests_total",
                "API requests by method and status code",
            ),
            &["method", "code"],
        )
        .expect("metric");
        let migrations = IntCounterVec::new(
            Opts::new(
                "violin_controller_migrations_total",
                "Live migrations ended, by result (completed, failed; followed: made with libvirt directly)",
            ),
            &["result"],
        )
        .expect("metric");
        for result in ["completed", "failed", "followed"] {
            migrations.with_label_values(&[result]);
        }
        let migrations_in_flight = IntGauge::new(
            "violin_controller_migrations_in_flight",
            "Live migrations being prepared, copied or switched over",
        )
        .expect("metric");
        let migration_duration = histogram(
            "violin_controller_migration_duration_seconds",
            "Live migrations from request to completion",
            0.125,
            12,
        );
        let migration_downtime = histogram(
            "violin_controller_migration_downtime_seconds",
            "Guest downtime of live migrations, as libvirt measured it",
            0.001,
            14,
        );
        let migration_reconvergence = histogram(
            "violin_controller_migration_reconvergence_seconds",
            "From a migrated VM's resumption until every host of its environment serves its new location",
            0.0005,
            14,
        );
        let topology_edges = IntGaugeVec::new(
            Opts::new(
                "violin_controller_topology_edges",
                "Directed VM pairs in the application topology VTTIF inferred, by environment",
            ),
            &["vni"],
        )
        .expect("metric");
        let topology_changes = IntCounterVec::new(
            Opts::new(
                "violin_controller_topology_changes_total",
                "Application topology changes VTTIF declared, by environment",
            ),
            &["vni"],
        )
        .expect("metric");
        let traffic_refused = IntCounterVec::new(
            Opts::new(
                "violin_controller_traffic_refused_pairs_total",
                "VM pairs in a host's traffic report that its VMs did not send, by host (not fed to VTTIF)",
            ),
            &["host"],
        )
        .expect("metric");
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["host", "peer"]).expect("metric")
        };
        let host_rtt = gauge(
            "violin_controller_host_rtt_seconds",
            "Round trip a host measured to another over the underlay (the least of its last probes)",
        );
        let host_bandwidth = gauge(
            "violin_controller_host_bandwidth_bytes_per_second",
            "Available bandwidth a host measured to another with a packet train",
        );
        let host_passive = gauge(
            "violin_controller_host_passive_bytes_per_second",
            "The fastest a host's own traffic went to another over the last 30 s",
        );
        let fast_paths = IntGaugeVec::new(
            Opts::new(
                "violin_controller_fast_path_links",
                "Fast-path links VADAPT keeps besides the star, by environment",
            ),
            &["vni"],
        )
        .expect("metric");
        let adaptations = IntCounterVec::new(
            Opts::new(
                "violin_controller_adaptations_total",
                "Overlay adaptations that changed links, by environment and trigger (manual, auto)",
            ),
            &["vni", "trigger"],
        )
        .expect("metric");
        let adapt_reconfigure = histogram(
            "violin_controller_adapt_reconfigure_seconds",
            "From an adaptation's decision until every host of its environment applied it",
            0.0005,
            14,
        );
        let domain_utilisation = GaugeVec::new(
            Opts::new(
                "violin_controller_domain_utilisation",
                "The adaptation manager's utilisation of each domain (desired CPU over capacity, equation 6.6)",
            ),
            &["domain"],
        )
        .expect("metric");
        let vm_cpu = GaugeVec::new(
            Opts::new(
                "violin_controller_vm_cpu_cores",
                "Each VM's CPU, in cores: used (the latest sample), predicted, desired and cap (its allocation)",
            ),
            &["vm", "kind"],
        )
        .expect("metric");
        let manager_decisions = IntCounterVec::new(
            Opts::new(
                "violin_controller_manager_decisions_total",
                "Adaptation-manager decisions carried out, by trigger (manual, auto) and what they did (migrate, resources)",
            ),
            &["trigger", "action"],
        )
        .expect("metric");
        let broker_demand = IntGaugeVec::new(
            Opts::new(
                "violin_controller_broker_demand",
                "VioCluster: the nodes each domain's queued and running jobs need, at the last round",
            ),
            &["domain"],
        )
        .expect("metric");
        let broker_machines = IntGaugeVec::new(
            Opts::new(
                "violin_controller_broker_machines",
                "VioCluster: each domain's machines at the last round: physical (its own that answer), busy, lent, borrowed",
            ),
            &["domain", "kind"],
        )
        .expect("metric");
        let broker_trades = IntCounterVec::new(
            Opts::new(
                "violin_controller_broker_machines_traded_total",
                "VioCluster: machines moved by trades carried out, by kind (lend, return, reclaim)",
            ),
            &["kind"],
        )
        .expect("metric");
        for c in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(broker_demand.clone()),
            Box::new(broker_machines.clone()),
            Box::new(broker_trades.clone()),
            Box::new(domain_utilisation.clone()),
            Box::new(vm_cpu.clone()),
            Box::new(manager_decisions.clone()),
            Box::new(topology_edges.clone()),
            Box::new(topology_changes.clone()),
            Box::new(traffic_refused.clone()),
            Box::new(host_rtt.clone()),
            Box::new(host_bandwidth.clone()),
            Box::new(host_passive.clone()),
            Box::new(fast_paths.clone()),
            Box::new(adaptations.clone()),
            Box::new(adapt_reconfigure.clone()),
            Box::new(migrations.clone()),
            Box::new(migrations_in_flight.clone()),
            Box::new(migration_duration.clone()),
            Box::new(migration_downtime.clone()),
            Box::new(migration_reconvergence.clone()),
            Box::new(latency.clone()),
            Box::new(errors.clone()),
            Box::new(connected.clone()),
            Box::new(registered.clone()),
            Box::new(leader.clone()),
            Box::new(generation.clone()),
            Box::new(acked.clone()),
            Box::new(over_bound.clone()),
            Box::new(requests.clone()),
        ] {
            registry.register(c).expect("register");
        }
        Metrics {
            registry,
            latency,
            errors,
            connected,
            registered,
            leader,
            generation,
            acked,
            over_bound,
            requests,
            migrations,
            migrations_in_flight,
            migration_duration,
            migration_downtime,
            migration_reconvergence,
            topology_edges,
            topology_changes,
            traffic_refused,
            host_rtt,
            host_bandwidth,
            host_passive,
            fast_paths,
            adaptations,
            adapt_reconfigure,
            domain_utilisation,
            vm_cpu,
            manager_decisions,
            broker_demand,
            broker_machines,
            broker_trades,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
