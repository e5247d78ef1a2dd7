//! The controller's own metrics (`/metrics`): its build, sync latency and errors per host,
//! hosts connected, the generation and each host's acknowledged one, API requests. Names
//! follow Prometheus' conventions (see dataplane-user's metrics.rs); `host` is the host's
//! name everywhere.
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub latency: Histogram,
    pub errors: IntCounterVec,
    pub connected: IntGauge,
    pub registered: IntGauge,
    pub generation: IntGauge,
    pub acked: IntGaugeVec,
    pub over_bound: IntCounterVec,
    pub requests: IntCounterVec,
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
        for c in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(errors.clone()),
            Box::new(connected.clone()),
            Box::new(registered.clone()),
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
            generation,
            acked,
            over_bound,
            requests,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
