//! The API's OpenAPI document, generated from the handlers' annotations and the
//! contract's types, served at `/openapi.json` and checked in as `controller/openapi.json`
//! (a test fails when the two disagree; `VIOLIN_WRITE_OPENAPI=1 cargo test -p controller
//! openapi` rewrites the file).
use utoipa::{openapi::OpenApi as Document, OpenApi};
use violin_api::openapi::Bearer;

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Violin controller API", version = "1",
         description = "Environments, VNET primitives, host sync, VMs and live migrations. Every /v1 operation needs `Authorization: Bearer TOKEN`."),
    paths(list, get_env, put_env, delete_env, plan_env, add_link, delete_link, add_rule,
          delete_rule, links, rules, route_of, get_bound, set_bound, sync_status, hosts,
          register, sync_stream, ack, host_interfaces, report_vms, report_traffic, report_health, status,
          get_topology, get_adapt, post_adapt, list_adaptations, report_measurements, measurements, vms, start_migration,
          list_migrations, get_migration, cancel_migration, get_usage, get_manager, post_manager,
          manager_log, get_brokers, post_round, create_credential, list_credentials,
          delete_credential, get_audit, metrics, health, openapi_json),
    components(schemas(ErrorBody, violin_api::share::Share, violin_api::share::Delta)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

pub fn document() -> Document {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_file_is_the_generated_document() {
        violin_api::openapi::check_file(
            concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"),
            &super::document(),
            "VIOLIN_WRITE_OPENAPI=1 cargo test -p controller openapi",
        );
    }
}
