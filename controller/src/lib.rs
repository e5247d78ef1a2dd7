//! Violin's controller: the source of truth for hosts, environments, overlay links,
//! forwarding rules and policies, and the supervisor of live migrations.
//!
//! `spec` validates environment specs and plans changes; `store` keeps the state in a
//! `kv` engine (redb, or `etcd` for several replicas, of which `replica` says who leads);
//! `share` cuts each host's share out of it and `hub` pushes it to the hosts' `violind`
//! (snapshot, then deltas) and collects their acknowledgements; `route` traces a frame's
//! path; `migrate` supervises live migrations through the hosts' libvirt daemons; `vttif`
//! infers each environment's application topology from the hosts' traffic reports and
//! `adapt` (VADAPT) fits the overlay to it with fast-path links; `manager` (the
//! adaptation manager) balances CPU between domains and hosts from the VMs' `usage`, and
//! `autonomic` carries its decisions out; `broker` is VioCluster's machine trading; `api`
//! is the authenticated `/v1` HTTP API served by `violin-controller`, with
//! its `metrics`. The types on the wire are `violin_api`'s.
pub mod adapt;
pub mod api;
pub mod autonomic;
pub mod broker;
pub mod etcd;
pub mod health;
pub mod hub;
pub mod identity;
pub mod kv;
pub mod manager;
pub mod measure;
pub mod metrics;
pub mod migrate;
pub mod replica;
pub mod route;
pub mod share;
pub mod spec;
pub mod store;
pub mod usage;
pub mod viocluster;
pub mod vttif;
