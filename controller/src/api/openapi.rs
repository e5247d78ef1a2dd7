//! The API's OpenAPI document, generated from the handlers' annotations and the
//! contract's types, served at `/openapi.json` and checked in as `controller/openapi.json`
//! (a test fails when the two disagree; `VIOLIN_WRITE_OPENAPI=1 cargo test -p controller
//! openapi` rewrites the file).
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        OpenApi as Document, RefOr, Response, ResponseBuilder,
    },
    Modify, OpenApi,
};

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Violin controller API", version = "1",
         description = "Environments, VNET primitives and host sync. Every /v1 operation needs `Authorization: Bearer TOKEN`."),
    paths(list, get_env, put_env, delete_env, plan_env, add_link, delete_link, add_rule,
          delete_rule, links, rules, route_of, get_bound, set_bound, sync_status, hosts,
          register, sync_stream, ack, host_interfaces, metrics, openapi_json),
    components(schemas(ErrorBody, violin_api::share::Share, violin_api::share::Delta)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer scheme and the 401 every operation that needs it can answer.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let unauthorised: RefOr<Response> = ResponseBuilder::new()
            .description("Missing or wrong bearer token")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            .filter(|op| op.security.is_none())
            {
                op.responses
                    .responses
                    .insert("401".into(), unauthorised.clone());
            }
        }
    }
}

pub fn document() -> Document {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    #[test]
    fn openapi_file_is_the_generated_document() {
        let generated = super::document().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("VIOLIN_WRITE_OPENAPI").is_some() {
            std::fs::write(FILE, &generated).unwrap();
        }
        let file = std::fs::read_to_string(FILE).unwrap();
        assert!(
            file == generated,
            "controller/openapi.json is not the document the handlers describe; \
             regenerate it with VIOLIN_WRITE_OPENAPI=1 cargo test -p controller openapi"
        );
    }
}
